package deploy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// root is the repository root, relative to this package's directory (where
// go test runs).
const root = ".."

// nodes are the refcast services of docker-compose.yml.
var nodes = []string{"refcast1", "refcast2", "refcast3"}

// inCI reports whether missing tools must fail the tests instead of skipping
// them.
func inCI() bool { return os.Getenv("CI") == "true" }

// needTool returns the path of an external tool, skipping the test loudly when
// it is missing, or failing it under CI=true.
func needTool(t *testing.T, name string, candidates ...string) string {
	t.Helper()
	for _, c := range append(candidates, name) {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if inCI() {
		t.Fatalf("%s is not installed; CI=true requires it", name)
	}
	t.Skipf("SKIP: %s is not installed; install it to run this check (fails under CI=true)", name)
	return ""
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- docker compose model --------------------------------------------------

// strList is a compose field that is either a string or a list of strings
// (command, entrypoint, healthcheck.test). A string is split on blanks, which
// is enough for the files checked here.
type strList []string

func (l *strList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = strings.Fields(n.Value)
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}

// envMap is compose's environment: a map or a list of KEY=VALUE.
type envMap map[string]string

func (m *envMap) UnmarshalYAML(n *yaml.Node) error {
	*m = envMap{}
	if n.Kind == yaml.SequenceNode {
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		for _, kv := range s {
			k, v, _ := strings.Cut(kv, "=")
			(*m)[k] = v
		}
		return nil
	}
	var mm map[string]string
	if err := n.Decode(&mm); err != nil {
		return err
	}
	for k, v := range mm {
		(*m)[k] = v
	}
	return nil
}

// dependsOn is compose's depends_on: a list of names or a map of name to
// {condition}.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = dependsOn{}
	if n.Kind == yaml.SequenceNode {
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		for _, name := range s {
			(*d)[name] = "service_started"
		}
		return nil
	}
	var m map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	for name, c := range m {
		(*d)[name] = c.Condition
	}
	return nil
}

// networks is a service's networks: a list of names or a map of name to
// settings; only ipv4_address is kept.
type networks map[string]string

func (nw *networks) UnmarshalYAML(n *yaml.Node) error {
	*nw = networks{}
	if n.Kind == yaml.SequenceNode {
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		for _, name := range s {
			(*nw)[name] = ""
		}
		return nil
	}
	var m map[string]*struct {
		IPv4 string `yaml:"ipv4_address"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	for name, s := range m {
		if s == nil {
			(*nw)[name] = ""
		} else {
			(*nw)[name] = s.IPv4
		}
	}
	return nil
}

type composeBuild struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Target     string            `yaml:"target"`
	Args       map[string]string `yaml:"args"`
}

type composeService struct {
	Image       string        `yaml:"image"`
	Build       *composeBuild `yaml:"build"`
	Command     strList       `yaml:"command"`
	Entrypoint  strList       `yaml:"entrypoint"`
	Environment envMap        `yaml:"environment"`
	Ports       []string      `yaml:"ports"`
	Volumes     []string      `yaml:"volumes"`
	DependsOn   dependsOn     `yaml:"depends_on"`
	Networks    networks      `yaml:"networks"`
	Healthcheck *struct {
		Test strList `yaml:"test"`
	} `yaml:"healthcheck"`
	StopGracePeriod string `yaml:"stop_grace_period"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

func loadCompose(t *testing.T, rel string) composeFile {
	t.Helper()
	var c composeFile
	if err := yaml.Unmarshal(readFile(t, rel), &c); err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	if len(c.Services) == 0 {
		t.Fatalf("%s: no services", rel)
	}
	return c
}

// flagValue returns the value of a --name flag in args, written as
// "--name value", "--name=value", "-name value" or "-name=value".
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// flagNames returns the names of the flags in args (without dashes or
// values).
func flagNames(args []string) []string {
	var names []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		names = append(names, name)
	}
	return names
}

// redisURL is a parsed refcast --redis value. net/url cannot be used: the
// sentinel and cluster forms list several host:port pairs.
type redisURL struct {
	Scheme string
	Hosts  []string // host:port
	Path   string   // without the leading slash: the sentinel master name
}

func parseRedisURL(s string) (redisURL, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return redisURL{}, fmt.Errorf("%q: no scheme", s)
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	hosts, path, _ := strings.Cut(rest, "/")
	u := redisURL{Scheme: scheme, Path: path}
	for _, h := range strings.Split(hosts, ",") {
		if !strings.Contains(h, ":") {
			h += ":6379"
		}
		u.Hosts = append(u.Hosts, h)
	}
	return u, nil
}

// drainOf returns a refcast node's --drain (flag or REFCAST_DRAIN).
func drainOf(args []string, env map[string]string) (time.Duration, error) {
	v, ok := flagValue(args, "drain")
	if !ok {
		v, ok = env["REFCAST_DRAIN"]
	}
	if !ok {
		return 0, fmt.Errorf("no --drain or REFCAST_DRAIN: set it explicitly so the grace period can be checked against it")
	}
	return time.ParseDuration(v)
}

func healthcheckHitsProbe(test []string) bool {
	j := strings.Join(test, " ")
	return strings.Contains(j, "/healthz") || strings.Contains(j, "/readyz")
}

// ---- docker-compose.yml -----------------------------------------------------

func TestCompose(t *testing.T) {
	c := loadCompose(t, "docker-compose.yml")
	for _, name := range append([]string{"redis", "lb", "git"}, nodes...) {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("service %q missing; have %v", name, keys(c.Services))
		}
	}

	t.Run("redis", func(t *testing.T) {
		r := c.Services["redis"]
		if !strings.HasPrefix(r.Image, "redis:7") {
			t.Errorf("image = %q, want redis:7", r.Image)
		}
		if v, _ := flagValue(r.Command, "appendonly"); v != "yes" {
			t.Errorf("command %q: want --appendonly yes (AOF: nodes resume clients without loss after a Redis restart)", r.Command)
		}
		if !slices.ContainsFunc(r.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
			t.Errorf("volumes %q: want a volume on /data", r.Volumes)
		}
		if r.Healthcheck == nil || len(r.Healthcheck.Test) == 0 {
			t.Error("no healthcheck")
		}
	})

	for _, name := range nodes {
		t.Run(name, func(t *testing.T) {
			s := c.Services[name]
			if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" || s.Build.Context != "." {
				t.Errorf("build = %+v, want context . and dockerfile deploy/Dockerfile", s.Build)
			}
			if len(s.Command) == 0 || s.Command[0] != "serve" {
				t.Fatalf("command = %q, want serve ...", s.Command)
			}
			if v, _ := flagValue(s.Command, "listen"); v != "0.0.0.0:8080" {
				t.Errorf("--listen = %q, want 0.0.0.0:8080", v)
			}
			v, ok := flagValue(s.Command, "redis")
			if !ok {
				t.Fatalf("command %q has no --redis", s.Command)
			}
			u, err := parseRedisURL(v)
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != "redis" || len(u.Hosts) != 1 || u.Hosts[0] != "redis:6379" {
				t.Errorf("--redis = %q, want redis://redis:6379 (the redis service)", v)
			}
			if s.DependsOn["redis"] != "service_healthy" {
				t.Errorf("depends_on = %v, want redis: service_healthy", s.DependsOn)
			}
			if s.Healthcheck == nil || !healthcheckHitsProbe(s.Healthcheck.Test) {
				t.Errorf("healthcheck must hit /healthz or /readyz")
			}
			drain, err := drainOf(s.Command, s.Environment)
			if err != nil {
				t.Fatal(err)
			}
			grace, err := time.ParseDuration(s.StopGracePeriod)
			if err != nil {
				t.Fatalf("stop_grace_period %q: %v", s.StopGracePeriod, err)
			}
			if grace <= drain {
				t.Errorf("stop_grace_period %v must exceed the drain %v, or Docker kills the node mid-drain", grace, drain)
			}
			for _, p := range s.Ports {
				t.Errorf("node publishes port %q: clients must come through the lb", p)
			}
		})
	}

	t.Run("lb", func(t *testing.T) {
		lb := c.Services["lb"]
		if !strings.HasPrefix(lb.Image, "haproxy:") {
			t.Errorf("image = %q, want haproxy", lb.Image)
		}
		if !slices.Contains(lb.Ports, "8080:8080") {
			t.Errorf("ports = %q, want 8080:8080", lb.Ports)
		}
		if !slices.ContainsFunc(lb.Volumes, func(v string) bool {
			return strings.HasPrefix(v, "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg")
		}) {
			t.Errorf("volumes = %q, want ./deploy/haproxy.cfg mounted as the image's config", lb.Volumes)
		}
		for _, n := range nodes {
			if _, ok := lb.DependsOn[n]; !ok {
				t.Errorf("depends_on lacks %s", n)
			}
		}
		servers := haproxyServers(t)
		for _, n := range nodes {
			if addr := servers[n]; addr != n+":8080" {
				t.Errorf("haproxy.cfg server %s defaults to %q, want %s:8080", n, addr, n)
			}
		}
		for name := range servers {
			if _, ok := c.Services[name]; !ok {
				t.Errorf("haproxy.cfg server %s is not a compose service", name)
			}
		}
	})

	t.Run("git", func(t *testing.T) {
		g := c.Services["git"]
		if g.Build == nil || g.Build.Dockerfile != "deploy/Dockerfile" || g.Build.Target != "git" {
			t.Errorf("build = %+v, want deploy/Dockerfile target git", g.Build)
		}
		u, err := parseRedisURL(g.Environment["REFCAST_REDIS"])
		if err != nil || u.Hosts[0] != "redis:6379" {
			t.Errorf("REFCAST_REDIS = %q, want redis://redis:6379", g.Environment["REFCAST_REDIS"])
		}
		if g.DependsOn["redis"] == "" {
			t.Errorf("depends_on = %v, want redis", g.DependsOn)
		}
		if !slices.Contains(g.Ports, "9418:9418") {
			t.Errorf("ports = %q, want 9418:9418 (git daemon)", g.Ports)
		}
		script := string(readFile(t, "deploy/git-server.sh"))
		for _, want := range []string{"refcast install-hook", "--redis", "--enable=receive-pack"} {
			if !strings.Contains(script, want) {
				t.Errorf("deploy/git-server.sh lacks %q", want)
			}
		}
		if fi, err := os.Stat(filepath.Join(root, "deploy/git-server.sh")); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("deploy/git-server.sh must be executable")
		}
	})

	t.Run("build targets exist", func(t *testing.T) {
		stages := dockerStages(t)
		for name, s := range c.Services {
			if s.Build != nil && s.Build.Target != "" && !slices.ContainsFunc(stages, func(st dockerStage) bool { return st.Name == s.Build.Target }) {
				t.Errorf("service %s builds target %q, which deploy/Dockerfile lacks", name, s.Build.Target)
			}
		}
	})
}

func keys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}

// ---- deploy/Dockerfile --------------------------------------------------------

type dockerStage struct {
	From  string     // image, ARG defaults substituted
	Name  string     // AS name
	Instr [][]string // instruction, then the rest of the line
}

// dockerStages parses deploy/Dockerfile into stages: comments dropped,
// continuation lines joined, ARG defaults declared before the first FROM
// substituted into FROM lines.
func dockerStages(t *testing.T) []dockerStage {
	t.Helper()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(readFile(t, "deploy/Dockerfile"))))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	globalArgs := map[string]string{}
	var stages []dockerStage
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		instr = strings.ToUpper(instr)
		rest = strings.TrimSpace(rest)
		switch {
		case instr == "ARG" && len(stages) == 0:
			k, v, _ := strings.Cut(rest, "=")
			globalArgs[k] = v
		case instr == "FROM":
			f := strings.Fields(rest)
			img := f[len(f)-1]
			st := dockerStage{}
			if len(f) >= 3 && strings.EqualFold(f[len(f)-2], "AS") {
				img, st.Name = f[len(f)-3], f[len(f)-1]
			}
			for k, v := range globalArgs {
				img = strings.ReplaceAll(img, "${"+k+"}", v)
			}
			st.From = img
			stages = append(stages, st)
		case len(stages) > 0:
			s := &stages[len(stages)-1]
			s.Instr = append(s.Instr, []string{instr, rest})
		}
	}
	return stages
}

func (s dockerStage) all(instr string) []string {
	var out []string
	for _, in := range s.Instr {
		if in[0] == instr {
			out = append(out, in[1])
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	stages := dockerStages(t)
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a multi-stage build", len(stages))
	}
	build := stages[0]
	if !strings.HasPrefix(build.From, "golang:1.26") {
		t.Errorf("builder FROM %q, want golang:1.26", build.From)
	}
	runs := strings.Join(build.all("RUN"), "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=", "./cmd/refcast"} {
		if !strings.Contains(runs, want) {
			t.Errorf("builder RUN lacks %q", want)
		}
	}
	final := stages[len(stages)-1]
	if final.Name != "refcast" {
		t.Errorf("last (default) stage is %q, want the refcast node image", final.Name)
	}
	rootUser := regexp.MustCompile(`^(root|0)(:|$)`)
	for _, s := range stages[1:] {
		t.Run(s.Name, func(t *testing.T) {
			users := s.all("USER")
			if len(users) == 0 {
				t.Fatalf("stage %s (%s) has no USER: it would run as root", s.Name, s.From)
			}
			if u := users[len(users)-1]; rootUser.MatchString(u) {
				t.Errorf("stage %s runs as %q", s.Name, u)
			}
			copies := strings.Join(s.all("COPY"), "\n")
			if !strings.Contains(copies, "--from="+build.Name) {
				t.Errorf("stage %s does not copy the binary from %s", s.Name, build.Name)
			}
			if s.Name != "git" && !slices.Contains(s.all("EXPOSE"), "8080") {
				t.Errorf("stage %s does not EXPOSE 8080", s.Name)
			}
			if strings.HasPrefix(s.From, "golang") {
				t.Errorf("stage %s ships the Go toolchain (%s)", s.Name, s.From)
			}
		})
	}
	for _, hc := range final.all("HEALTHCHECK") {
		if !strings.Contains(hc, "/healthz") {
			t.Errorf("HEALTHCHECK %q must probe /healthz", hc)
		}
	}
}
