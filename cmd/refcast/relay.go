package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/relay"
	"github.com/refcast/refcast/watch"
	"github.com/refcast/refcast/wire"
	"gopkg.in/yaml.v3"
)

// relayConfig is everything `refcast relay` is told.
type relayConfig struct {
	url           string
	repos         listFlag
	refs          listFlag
	tokenFile     string
	state         string
	to            string
	format        string
	secretFile    string
	config        string
	repoURL       string
	maxAttempts   int
	deadLetter    string
	metricsListen string
	drain         time.Duration
	logLevel      string
	logFormat     string
}

const relaySynopsis = `relay NODE_URL --repo R (--to URL --format FORMAT --secret-file FILE | --config FILE) [flags]

Follows a node like watch and delivers every ref update as a signed webhook
to each target, in order per target and repo, retrying with exponential
backoff until a 2xx answer (or --max-attempts, then --dead-letter).
--state keeps the cursor below which every target has its updates, and
the id delivered per ref, so a reset sends only the refs that changed.

Formats: github, gitlab, generic-hmac, jenkins, refcast. Secrets come from
files (--secret-file, secret_file in --config) or REFCAST_RELAY_SECRET,
never argv, and are at least 16 bytes. The node token is read from
REFCAST_TOKEN or --token-file. See docs/relay.md.`

// relayEnvPrefix names the environment twins of relay's flags
// (REFCAST_RELAY_TO, REFCAST_RELAY_FORMAT, ...), so a relay's settings do
// not collide with a node's or a watch's in one environment.
const relayEnvPrefix = "REFCAST_RELAY_"

func runRelay(ctx context.Context, args []string, env Env) error {
	c, err := parseRelayFlags(args, env)
	if err != nil {
		return err
	}
	targets, err := relayTargets(c, env)
	if err != nil {
		return usageError{msg: "relay: " + err.Error()}
	}
	token := env.Getenv("REFCAST_TOKEN")
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return fmt.Errorf("relay: read token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	log, err := newLogger(c.logLevel, c.logFormat, env)
	if err != nil {
		return err
	}
	var st watch.State
	if c.state != "" {
		if st, err = watch.OpenState(c.state); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
	}
	since := st.Cursor
	if c.deadLetter != "" {
		if err := os.MkdirAll(c.deadLetter, 0o750); err != nil {
			return fmt.Errorf("relay: --dead-letter: %w: create the directory or give another", err)
		}
	}
	reg := prometheus.NewRegistry()
	r, err := relay.New(relay.Options{
		Targets: targets, MaxAttempts: c.maxAttempts, DeadLetter: c.deadLetter,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return usageError{msg: "relay: " + err.Error()}
	}
	if err := checkTargets(ctx, targets); err != nil {
		r.Close(0)
		return fmt.Errorf("relay: %w", err)
	}
	r.Resume(since, st.Refs)
	client, err := watch.NewClient(watch.ClientOptions{URL: c.url, Repos: c.repos, Refs: c.refs, Token: token, Since: since, Logger: log})
	if err != nil {
		r.Close(0)
		return usageError{msg: "relay: " + err.Error()}
	}

	var metricsDone chan error
	var metricsSrv *http.Server
	if c.metricsListen != "" {
		ln, err := net.Listen("tcp", c.metricsListen)
		if err != nil {
			r.Close(0)
			return fmt.Errorf("relay: --metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle(wire.PathMetrics, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		metricsDone = make(chan error, 1)
		go func() { metricsDone <- metricsSrv.Serve(ln) }()
		log.Info("metrics", "listen", ln.Addr().String())
	}

	// The saver stores the safe cursor and the refs delivered as of it
	// (one atomic write) whenever they advance; it is the only writer of
	// the state file. A save failure stops the relay: going on would
	// resend everything since the last save after a restart.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	saved := st
	save := func() error {
		if c.state == "" {
			return nil
		}
		cur, refs := r.Remembered()
		if cur == "" || (cur == saved.Cursor && maps.EqualFunc(refs, saved.Refs, maps.Equal[map[string]string])) {
			return nil
		}
		next := watch.State{Cursor: cur, Refs: refs}
		if err := watch.WriteState(c.state, next); err != nil {
			return err
		}
		saved = next
		return nil
	}
	saverDone := make(chan struct{})
	go func() {
		defer close(saverDone)
		for {
			select {
			case <-runCtx.Done():
				return
			case <-r.Changed():
				if err := save(); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()

	err = client.Run(runCtx, func(ctx context.Context, f watch.Frame) error {
		return relayFrame(ctx, r, f)
	})
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	cancel(nil)
	<-saverDone
	r.Close(c.drain)
	if serr := save(); serr != nil && err == nil {
		err = serr
	}
	if metricsSrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		_ = metricsSrv.Shutdown(sctx)
		scancel()
		<-metricsDone
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// relayFrame hands one stream frame to the relay.
func relayFrame(ctx context.Context, r *relay.Relay, f watch.Frame) error {
	switch f.Event {
	case wire.EventRef, wire.EventSync:
		var e bus.Event
		if err := json.Unmarshal(f.Data, &e); err != nil {
			return fmt.Errorf("event %s: %w", f.ID, err)
		}
		return r.Handle(ctx, relay.Update{Cursor: f.ID, Event: e})
	case wire.EventReset:
		var rs wire.Reset
		if err := json.Unmarshal(f.Data, &rs); err != nil {
			return fmt.Errorf("reset %s: %w", f.ID, err)
		}
		if rs.Cursor == "" {
			rs.Cursor = f.ID
		}
		return r.HandleReset(ctx, rs)
	}
	// hello and names this version does not know: a position only.
	return r.Handle(ctx, relay.Update{Cursor: f.ID})
}

// parseRelayFlags declares relay's flags, parses the command line and the
// environment (REFCAST_RELAY_<FLAG>), and checks the combination.
func parseRelayFlags(args []string, env Env) (*relayConfig, error) {
	c := &relayConfig{}
	fs := newFlagSet("relay", relaySynopsis, env)
	fs.Var(&c.repos, "repo", "repo name or glob to follow (repeatable; required)")
	fs.Var(&c.refs, "ref", "ref pattern to follow (repeatable; default every ref)")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the node's access token (else REFCAST_TOKEN)")
	fs.StringVar(&c.state, "state", "", "file storing the cursor every target has its updates up to, and the ids delivered; a restart resumes from it")
	fs.StringVar(&c.to, "to", "", "URL of the one target (or use --config)")
	fs.StringVar(&c.format, "format", "", "format of --to: "+strings.Join(relay.Formats, ", "))
	fs.StringVar(&c.secretFile, "secret-file", "", "file holding --to's secret, at least 16 bytes (else REFCAST_RELAY_SECRET)")
	fs.StringVar(&c.config, "config", "", "YAML file listing targets (url, format, secret_file, repo, ref, timeout, headers)")
	fs.StringVar(&c.repoURL, "repo-url", "", "repository URL receivers match, {repo} replaced by the repo name (e.g. https://git.example.com/{repo})")
	fs.IntVar(&c.maxAttempts, "max-attempts", 0, "attempts per delivery before it goes to --dead-letter (0: retry forever)")
	fs.StringVar(&c.deadLetter, "dead-letter", "", "directory for deliveries given up after --max-attempts")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "address serving /metrics (e.g. :9091; empty: none)")
	fs.DurationVar(&c.drain, "drain", 10*time.Second, "on SIGINT/SIGTERM, let requests in flight finish this long before abandoning them")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.envNames = map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		fs.envNames[f.Name] = relayEnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
	})
	pos, err := parseInterspersed(fs, args, env)
	if err != nil {
		return nil, err
	}
	switch len(pos) {
	case 0:
		c.url = env.Getenv(relayEnvPrefix + "URL")
	case 1:
		c.url = pos[0]
	default:
		return nil, usageError{msg: fmt.Sprintf("relay: unexpected argument %q", pos[1])}
	}
	if c.url == "" {
		return nil, usageError{msg: "relay: the node URL is required (refcast relay NODE_URL --repo R ...)"}
	}
	if len(c.repos) == 0 {
		return nil, usageError{msg: "relay: at least one --repo is required"}
	}
	if (c.to == "") == (c.config == "") {
		return nil, usageError{msg: "relay: give one target with --to URL --format FORMAT --secret-file FILE, or several with --config FILE"}
	}
	if c.config != "" && (c.format != "" || c.secretFile != "") {
		return nil, usageError{msg: "relay: --format and --secret-file go with --to; with --config each target names its own"}
	}
	if c.maxAttempts < 0 || c.drain < 0 {
		return nil, usageError{msg: "relay: --max-attempts and --drain must not be negative"}
	}
	if c.maxAttempts > 0 && c.deadLetter == "" {
		return nil, usageError{msg: "relay: --max-attempts gives deliveries up; set --dead-letter DIR to keep them"}
	}
	return c, nil
}

// relayFileTarget is one target of --config.
type relayFileTarget struct {
	Name          string            `yaml:"name"`
	URL           string            `yaml:"url"`
	Format        string            `yaml:"format"`
	SecretFile    string            `yaml:"secret_file"`
	SecretEnv     string            `yaml:"secret_env"`
	Repo          []string          `yaml:"repo"`
	Ref           []string          `yaml:"ref"`
	Timeout       time.Duration     `yaml:"timeout"`
	Headers       map[string]string `yaml:"headers"`
	RepoURL       string            `yaml:"repo_url"`
	DefaultBranch string            `yaml:"default_branch"`
}

// parseRelayConfig reads --config: a YAML list of targets, or a mapping
// with a targets: list. Unknown keys are errors, so a misspelt
// secret_file is not silently an unsigned target.
func parseRelayConfig(b []byte) ([]relayFileTarget, error) {
	var root any
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, err
	}
	strict := func(v any) error {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		return dec.Decode(v)
	}
	var list []relayFileTarget
	switch root.(type) {
	case []any:
		if err := strict(&list); err != nil {
			return nil, err
		}
	case map[string]any:
		var doc struct {
			Targets []relayFileTarget `yaml:"targets"`
		}
		if err := strict(&doc); err != nil {
			return nil, err
		}
		list = doc.Targets
	case nil:
	default:
		return nil, errors.New(`not a list of targets nor a mapping with a "targets" key`)
	}
	if len(list) == 0 {
		return nil, errors.New("no targets")
	}
	return list, nil
}

// relayTargets builds the targets from --to or --config, reading their
// secrets.
func relayTargets(c *relayConfig, env Env) ([]*relay.Target, error) {
	var list []relayFileTarget
	if c.to != "" {
		list = []relayFileTarget{{URL: c.to, Format: c.format, SecretFile: c.secretFile, SecretEnv: relayEnvPrefix + "SECRET", RepoURL: c.repoURL}}
	} else {
		b, err := os.ReadFile(c.config)
		if err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
		if list, err = parseRelayConfig(b); err != nil {
			return nil, fmt.Errorf("--config %s: %w", c.config, err)
		}
	}
	var out []*relay.Target
	for i, ft := range list {
		where := fmt.Sprintf("target %d (%s)", i+1, ft.URL)
		if ft.URL == "" {
			return nil, fmt.Errorf("%s: no url", where)
		}
		if _, err := relay.CheckURL(ft.URL); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if ft.Format == "" {
			return nil, fmt.Errorf("%s: no format; use one of %s", where, strings.Join(relay.Formats, ", "))
		}
		f, err := relay.ParseFormat(ft.Format)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		secret, err := relaySecret(ft, env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		t := &relay.Target{
			Name: ft.Name, URL: ft.URL, Format: f, Secret: secret, Repos: ft.Repo, Refs: ft.Ref,
			Timeout: ft.Timeout, RepoURL: ft.RepoURL, DefaultBranch: ft.DefaultBranch,
		}
		if t.RepoURL == "" {
			t.RepoURL = c.repoURL
		}
		if len(ft.Headers) > 0 {
			t.Header = http.Header{}
			for k, v := range ft.Headers {
				t.Header.Set(k, v)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// relaySecret reads a target's secret from its file, else from its
// environment variable; trailing newlines of a file are not part of it.
func relaySecret(ft relayFileTarget, env Env) ([]byte, error) {
	var s string
	switch {
	case ft.SecretFile != "":
		b, err := os.ReadFile(ft.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("secret file: %w: write the secret (at least %d bytes) there", err, relay.MinSecretLen)
		}
		s = strings.TrimRight(string(b), "\r\n")
	case ft.SecretEnv != "" && env.Getenv(ft.SecretEnv) != "":
		s = env.Getenv(ft.SecretEnv)
	default:
		return nil, errors.New("no secret: give --secret-file (secret_file in --config) or set REFCAST_RELAY_SECRET (secret_env)")
	}
	if len(s) < relay.MinSecretLen {
		return nil, fmt.Errorf("secret is %d bytes, shorter than %d: use e.g. openssl rand -hex 32", len(s), relay.MinSecretLen)
	}
	return []byte(s), nil
}

// targetDialTimeout bounds the start-up check of one target: 5 s is long
// enough for a slow DNS answer and short enough for an operator waiting.
const targetDialTimeout = 5 * time.Second

// checkTargets proves at start that every target's host resolves and
// accepts a TCP connection, so a typo in a URL is an exit with a message,
// not a retry loop in the logs. A receiver that is down at start also
// fails it: a supervisor restarts the relay, which resumes from --state.
func checkTargets(ctx context.Context, targets []*relay.Target) error {
	for _, t := range targets {
		u, err := url.Parse(t.URL)
		if err != nil {
			return err
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		d := net.Dialer{Timeout: targetDialTimeout}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
		if err != nil {
			return fmt.Errorf("target %s (%s) is unreachable: %w: check the URL and that the receiver is up", t.Name, u.Redacted(), err)
		}
		conn.Close()
	}
	return nil
}
