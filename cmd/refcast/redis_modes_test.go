package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/hook"
	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// These tests drive the real binary and git hook through the Redis URL
// forms beyond plain redis://: ACL users (with the rules docs/security.md
// gives), Cluster, and TLS with a private CA. Sentinel is proven in
// bus/redis/live_test.go; the binary passes the URL through unchanged.

// hookRepo is a bare repository whose hook publishes to Redis as repo,
// and a clone of it.
type hookRepo struct {
	name, bare, work string
}

func newHookRepo(t *testing.T, bin, redisURL, name string) *hookRepo {
	t.Helper()
	dir := t.TempDir()
	r := &hookRepo{name: name, bare: filepath.Join(dir, "r.git"), work: filepath.Join(dir, "work")}
	testnode.Git(t, dir, nil, "init", "-q", "--bare", "-b", "main", r.bare)
	runBin(t, bin, "install-hook", r.bare, "--redis", redisURL, "--repo", name)
	testnode.Git(t, dir, nil, "clone", "-q", r.bare, r.work)
	return r
}

// push commits and pushes main, returning the new id and git's standard
// error (where the hook's warnings go).
func (r *hookRepo) push(t *testing.T, msg string) (string, string) {
	t.Helper()
	testnode.Git(t, r.work, nil, "commit", "-q", "--allow-empty", "-m", msg)
	sha := testnode.Git(t, r.work, nil, "rev-parse", "HEAD")
	_, stderr, err := gitPush(r.work, "HEAD:main")
	if err != nil {
		t.Fatalf("push to %s: %v\n%s", r.name, err, stderr)
	}
	return sha, stderr
}

// docACLFixes are rules docs/security.md lacks, found by these tests: the
// node's selector must also cover the tip key, which every script's
// ensureEpoch deletes when a partition starts a new epoch (so on a fresh
// Redis a node user without it cannot even read the heads). Applied only
// while the document lacks them; remove once it has them.
var docACLFixes = []struct{ user, old, new string }{}

// clusterACLRules are what docs/security.md ("Cluster") adds to each user
// on a Cluster, plus +command: go-redis's cluster client asks COMMAND for
// key positions and, refused, asks again before commands (each refusal
// lands in ACL LOG).
var clusterACLRules = []any{"+cluster|slots", "+cluster|shards", "+readonly", "+command"}

// docACLCommands returns the ACL SETUSER commands of docs/security.md,
// with its placeholder passwords replaced (and docACLFixes applied).
func docACLCommands(t *testing.T, hookPW, nodePW string) [][]any {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds [][]any
	for line := range strings.Lines(string(doc)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "ACL SETUSER ") {
			continue
		}
		for _, fix := range docACLFixes {
			if strings.HasPrefix(line, "ACL SETUSER "+fix.user+" ") && !strings.Contains(line, fix.new) {
				t.Logf("docs/security.md: %s lacks %q: applying the fix", fix.user, fix.new)
				line = strings.Replace(line, fix.old, fix.new, 1)
			}
		}
		line = strings.NewReplacer("HOOK-PASSWORD", hookPW, "NODE-PASSWORD", nodePW).Replace(line)
		var args []any
		for _, f := range strings.Fields(line) {
			args = append(args, f)
		}
		cmds = append(cmds, args)
	}
	if len(cmds) < 4 {
		t.Fatalf("docs/security.md has %d ACL SETUSER lines, want the hook, node, node-publish users and default off", len(cmds))
	}
	return cmds
}

// applyACL runs cmds (extended with extra rules for the refcast users) on
// a server as its admin.
func applyACL(t *testing.T, c *goredis.Client, cmds [][]any, extra ...any) {
	t.Helper()
	for _, cmd := range cmds {
		if len(extra) > 0 && strings.HasPrefix(cmd[2].(string), "refcast-") {
			cmd = append(append([]any(nil), cmd...), extra...)
		}
		if err := c.Do(t.Context(), cmd...).Err(); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
}

// aclDenials returns the ACL LOG entries other than failed logins.
func aclDenials(t *testing.T, c *goredis.Client) []string {
	t.Helper()
	entries, err := c.Do(t.Context(), "ACL", "LOG").Slice()
	if err != nil {
		t.Fatalf("ACL LOG: %v", err)
	}
	var out []string
	for _, e := range entries {
		s := fmt.Sprint(e)
		if !strings.Contains(s, "reason:auth") {
			out = append(out, s)
		}
	}
	return out
}

// loggedNode is a `refcast serve` whose output the test reads.
type loggedNode struct {
	url  string
	cmd  *exec.Cmd
	mu   sync.Mutex // guards out
	out  bytes.Buffer
	done chan struct{}
}

func (n *loggedNode) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.out.Write(p)
}

func (n *loggedNode) log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.out.String()
}

// startLoggedNode runs `refcast serve` without waiting for it to be ready.
func startLoggedNode(t *testing.T, bin string, args ...string) *loggedNode {
	t.Helper()
	addr := testnode.FreeAddr(t)
	n := &loggedNode{url: "http://" + addr, done: make(chan struct{})}
	n.cmd = exec.Command(bin, append([]string{"serve", "--listen", addr, "--drain", "100ms", "--heartbeat", "500ms"}, args...)...)
	n.cmd.Stdout, n.cmd.Stderr = n, n
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		_ = n.cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			t.Logf("refcast serve %s log:\n%s", addr, n.log())
		}
	})
	return n
}

// waitReadyz waits until /readyz answers want.
func (n *loggedNode) waitReadyz(t *testing.T, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	got := 0
	for time.Now().Before(deadline) {
		if res, err := http.Get(n.url + "/readyz"); err == nil {
			res.Body.Close()
			if got = res.StatusCode; got == want {
				return
			}
		}
		select {
		case <-n.done:
			t.Fatalf("refcast serve exited waiting for /readyz %d:\n%s", want, n.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("/readyz = %d after %v, want %d", got, d, want)
}

// TestRedisACLUsersThroughBinary: with the ACL users exactly as
// docs/security.md creates them (default user off), a node logged in as
// refcast-node and a hook as refcast-hook carry a push to an SSE client,
// and Redis logs no refused command. A hook with a wrong password spools
// (exit 0, one warning, no password) and publishes once fixed and
// flushed; a node given a wrong password refuses to start, and a running
// node whose password is rotated away reports not ready until it is back,
// never printing a password.
func TestRedisACLUsersThroughBinary(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git", "redis-server")
	bin := testnode.Build(t)
	const hookPW, nodePW, badPW = "hook-pw-41", "node-pw-42", "Wr0ng-pw-43"
	rs := redistest.Start(t, redistest.Options{User: "admin", Password: "admin-pw-40"})
	admin := rs.Client()
	applyACL(t, admin, docACLCommands(t, hookPW, nodePW))
	nodeURL := "redis://refcast-node:" + nodePW + "@" + rs.Addr()
	hookURL := "redis://refcast-hook:" + hookPW + "@" + rs.Addr()

	node := startLoggedNode(t, bin, "--redis", nodeURL)
	node.waitReadyz(t, http.StatusOK, 20*time.Second)
	sse := testnode.Subscribe(t, node.url+"/v1/events?repo=acme/*", nil)
	sse.Next(t, 5*time.Second, "hello")

	repo := newHookRepo(t, bin, hookURL, "acme/app")
	sha, stderr := repo.push(t, "as refcast-hook")
	if strings.Contains(stderr, "refcast hook") {
		t.Fatalf("push with the right password warned:\n%s", stderr)
	}
	if ev := decodeEvent(t, sse.Next(t, 10*time.Second, "ref")); ev.New != sha || ev.Repo != "acme/app" {
		t.Fatalf("event %+v, want %s", ev, sha)
	}
	if d := aclDenials(t, admin); len(d) > 0 {
		t.Fatalf("Redis refused commands under the documented ACL rules: %v", d)
	}

	t.Run("hook wrong password spools", func(t *testing.T) {
		testnode.Git(t, repo.bare, nil, "config", "refcast.redis", strings.Replace(hookURL, hookPW, badPW, 1))
		sha, stderr := repo.push(t, "with a wrong password")
		assertOneWarning(t, stderr)
		if strings.Contains(stderr, badPW) || strings.Contains(stderr, hookPW) {
			t.Errorf("hook output leaks a password:\n%s", stderr)
		}
		if !strings.Contains(stderr, "WRONGPASS") {
			t.Errorf("hook warning does not say the password was refused:\n%s", stderr)
		}
		assertSpooled(t, filepath.Join(repo.bare, hook.DefaultSpoolName), 1)
		sse.None(t, 300*time.Millisecond, "ref")

		testnode.Git(t, repo.bare, nil, "config", "refcast.redis", hookURL)
		if out := runFlush(t, bin, repo.bare); strings.Contains(out, hookPW) {
			t.Errorf("flush output leaks the password:\n%s", out)
		}
		if ev := decodeEvent(t, sse.Next(t, 10*time.Second, "ref")); ev.New != sha {
			t.Fatalf("flushed event new = %s, want %s", ev.New, sha)
		}
	})

	t.Run("node wrong password at start", func(t *testing.T) {
		bad := startLoggedNode(t, bin, "--redis", strings.Replace(nodeURL, nodePW, badPW, 1))
		select {
		case <-bad.done:
		case <-time.After(20 * time.Second):
			t.Fatal("a node with a wrong Redis password is still running after 20s")
		}
		out := bad.log()
		if strings.Contains(out, badPW) {
			t.Errorf("node output leaks the password:\n%s", out)
		}
		if !strings.Contains(out, "WRONGPASS") || !strings.Contains(out, "refcast-node:xxxxx@") {
			t.Errorf("node output does not name the refused login:\n%s", out)
		}
	})

	t.Run("node password rotated away", func(t *testing.T) {
		// A new password only: existing connections stay logged in
		// until killed, as after a Redis restart with a rotated aclfile.
		if err := admin.Do(t.Context(), "ACL", "SETUSER", "refcast-node", "resetpass", ">rotated-pw-44").Err(); err != nil {
			t.Fatal(err)
		}
		if err := admin.Do(t.Context(), "CLIENT", "KILL", "USER", "refcast-node").Err(); err != nil {
			t.Fatal(err)
		}
		node.waitReadyz(t, http.StatusServiceUnavailable, 15*time.Second)
		// Not a blip from the killed connections: it stays not ready,
		// and says why.
		time.Sleep(1500 * time.Millisecond)
		if res, err := http.Get(node.url + "/readyz"); err != nil || res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with a refused password = %v, %v; want 503", res, err)
		} else {
			res.Body.Close()
		}
		if !strings.Contains(node.log(), "WRONGPASS") {
			t.Errorf("node log does not say its login was refused:\n%s", node.log())
		}
		if err := admin.Do(t.Context(), "ACL", "SETUSER", "refcast-node", ">"+nodePW).Err(); err != nil {
			t.Fatal(err)
		}
		node.waitReadyz(t, http.StatusOK, 15*time.Second)
		sha, _ := repo.push(t, "after the node logged in again")
		if ev := decodeEvent(t, sse.Next(t, 15*time.Second, "ref", "reset")); ev.New != sha {
			t.Fatalf("event after recovery new = %s, want %s", ev.New, sha)
		}
		if out := node.log(); strings.Contains(out, nodePW) || strings.Contains(out, "rotated-pw-44") {
			t.Errorf("node log leaks a password:\n%s", out)
		}
	})
}

// TestRedisClusterThroughBinary: two nodes and the hooks of several repos
// on a 3-master Redis Cluster (redis-cluster:// seeds), logged in as the
// documented ACL users plus the documented cluster additions. Pushes to
// repos whose partitions live on every shard reach SSE clients on both
// nodes.
func TestRedisClusterThroughBinary(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git", "redis-server", "redis-cli")
	bin := testnode.Build(t)
	c := redistest.StartCluster(t, 3)
	const hookPW, nodePW = "hook-pw-51", "node-pw-52"
	cmds := docACLCommands(t, hookPW, nodePW)
	for _, s := range c.Servers {
		// ACL users are per server. The harness logs in as the default
		// user, so leave it on: drop "ACL SETUSER default off".
		var keep [][]any
		for _, cmd := range cmds {
			if cmd[2] != "default" {
				keep = append(keep, cmd)
			}
		}
		applyACL(t, s.Client(), keep, clusterACLRules...)
	}
	seeds := strings.Join(c.Addrs(), ",")
	nodeURL := "redis-cluster://refcast-node:" + nodePW + "@" + seeds
	hookURL := "redis-cluster://refcast-hook:" + hookPW + "@" + seeds

	var streams []*testnode.Stream
	for range 2 {
		n := testnode.Start(t, bin, "", "--redis", nodeURL, "--drain", "100ms", "--heartbeat", "500ms")
		s := testnode.Subscribe(t, n.URL+"/v1/events?repo=acme/*", nil)
		s.Next(t, 5*time.Second, "hello")
		streams = append(streams, s)
	}

	const repos = 6
	want := map[string]string{} // repo -> pushed id
	for i := range repos {
		r := newHookRepo(t, bin, hookURL, fmt.Sprintf("acme/r%d", i))
		sha, stderr := r.push(t, "to "+r.name)
		if strings.Contains(stderr, "refcast hook") {
			t.Fatalf("push to %s warned:\n%s", r.name, stderr)
		}
		want[r.name] = sha
	}
	for i, s := range streams {
		got := map[string]string{}
		for range repos {
			ev := decodeEvent(t, s.Next(t, 10*time.Second, "ref"))
			got[ev.Repo] = ev.New
		}
		for repo, sha := range want {
			if got[repo] != sha {
				t.Errorf("node %d: %s = %q, want %s", i, repo, got[repo], sha)
			}
		}
		s.None(t, 300*time.Millisecond, "ref")
	}

	// The pushes spread over every shard, and no command was refused.
	for _, s := range c.Servers {
		rc := s.Client()
		if n, err := rc.DBSize(t.Context()).Result(); err != nil || n == 0 {
			t.Errorf("shard %s holds %d keys (%v): the repos did not spread over every shard", s.Addr(), n, err)
		}
		if d := aclDenials(t, rc); len(d) > 0 {
			t.Errorf("shard %s refused commands under the documented ACL rules: %v", s.Addr(), d)
		}
	}
}

// TestRedisTLSThroughBinary: a node and a hook reach a TLS-only Redis
// through rediss://...?tls_ca_file=, verifying its certificate against a
// private CA; a hook trusting another CA spools, naming the certificate.
func TestRedisTLSThroughBinary(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git", "redis-server")
	bin := testnode.Build(t)
	srv := redistest.StartTLS(t)
	node := testnode.Start(t, bin, "", "--redis", srv.URL(), "--drain", "100ms", "--heartbeat", "500ms")
	sse := testnode.Subscribe(t, node.URL+"/v1/events?repo=acme/app", nil)
	sse.Next(t, 5*time.Second, "hello")

	repo := newHookRepo(t, bin, srv.URL(), "acme/app")
	sha, stderr := repo.push(t, "over TLS")
	if strings.Contains(stderr, "refcast hook") {
		t.Fatalf("push over TLS warned:\n%s", stderr)
	}
	if ev := decodeEvent(t, sse.Next(t, 10*time.Second, "ref")); ev.New != sha {
		t.Fatalf("event new = %s, want %s", ev.New, sha)
	}

	other := redistest.NewCA(t)
	testnode.Git(t, repo.bare, nil, "config", "refcast.redis", "rediss://"+srv.Addr()+"?tls_ca_file="+other.CAFile)
	_, stderr = repo.push(t, "trusting the wrong CA")
	assertOneWarning(t, stderr)
	if !strings.Contains(stderr, "certificate signed by unknown authority") {
		t.Errorf("warning does not name the certificate problem:\n%s", stderr)
	}
	sse.None(t, 300*time.Millisecond, "ref")
}
