package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

// The test binary doubles as the refcast binary the installed hooks run:
// with hookTestExec set it runs the command line and exits.
const hookTestExec = "REFCAST_HOOK_TEST_EXEC"

func init() {
	if os.Getenv(hookTestExec) == "1" {
		env := Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
		os.Exit(Run(context.Background(), os.Args[1:], env))
	}
}

// hookWorld is a bare "server" repository, a clone, and the environment
// git and the hook run with: an empty HOME, no system config.
type hookWorld struct {
	t         testing.TB
	bare, wc  string
	env       []string
	exe, home string
}

func newHookWorld(t testing.TB, extraEnv ...string) *hookWorld {
	t.Helper()
	dir := t.TempDir()
	w := &hookWorld{t: t, bare: filepath.Join(dir, "srv.git"), wc: filepath.Join(dir, "wc"), home: filepath.Join(dir, "home")}
	os.MkdirAll(w.home, 0o700)
	os.WriteFile(filepath.Join(w.home, ".gitconfig"), []byte("[init]\n\tdefaultBranch = main\n[gc]\n\tauto = 0\n"), 0o600)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "REFCAST_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			w.env = append(w.env, kv)
		}
	}
	w.env = append(w.env, "HOME="+w.home, "XDG_CONFIG_HOME="+filepath.Join(w.home, ".config"), "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com", "GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com",
		hookTestExec+"=1", "REFCAST_FLUSH_BACKGROUND=false", "REFCAST_ENRICH_BUDGET=1h", // as testnode.GitEnv
		"GORACE=atexit_sleep_ms=0") // the race runtime otherwise sleeps 1s at every hook exit
	w.env = append(w.env, extraEnv...)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w.exe = exe
	w.git(dir, "init", "-q", "--bare", w.bare)
	w.git(dir, "init", "-q", w.wc)
	w.git(w.wc, "remote", "add", "origin", w.bare)
	w.commit("first")
	w.git(w.wc, "push", "-q", "origin", "main")
	return w
}

func (w *hookWorld) run(dir, stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, w.env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (w *hookWorld) git(dir string, args ...string) string {
	w.t.Helper()
	out, err := w.run(dir, "", "/usr/bin/git", args...)
	if err != nil {
		w.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

func (w *hookWorld) commit(msg string) string {
	w.git(w.wc, "commit", "-q", "--allow-empty", "-m", msg)
	return w.git(w.wc, "rev-parse", "HEAD")
}

// refcast runs the binary as git would run it, in dir.
func (w *hookWorld) refcast(dir, stdin string, args ...string) (string, error) {
	return w.run(dir, stdin, w.exe, args...)
}

func (w *hookWorld) install(args ...string) {
	w.t.Helper()
	out, err := w.refcast(w.bare, "", append([]string{"install-hook", w.bare, "--binary", w.exe}, args...)...)
	if err != nil {
		w.t.Fatalf("install-hook: %v\n%s", err, out)
	}
}

// testNode records POST /v1/publish bodies, deduplicating push ids as a
// real node does; down makes it answer 503.
type testNode struct {
	*httptest.Server
	mu     sync.Mutex
	pushes []bus.Push
	auth   []string
	down   atomic.Bool
}

func newTestNode(t testing.TB) *testNode {
	n := &testNode{}
	n.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.down.Load() {
			http.Error(w, `{"error":"bus unavailable","status":503}`, http.StatusServiceUnavailable)
			return
		}
		var p bus.Push
		if r.URL.Path != "/v1/publish" || json.NewDecoder(r.Body).Decode(&p) != nil || p.Validate() != nil {
			http.Error(w, `{"error":"bad push","status":400}`, http.StatusBadRequest)
			return
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		n.auth = append(n.auth, r.Header.Get("Authorization"))
		if slices.ContainsFunc(n.pushes, func(q bus.Push) bool { return q.ID == p.ID }) {
			fmt.Fprint(w, `{"published":0,"duplicate":true}`)
			return
		}
		n.pushes = append(n.pushes, p)
		fmt.Fprintf(w, `{"published":%d,"duplicate":false}`, len(p.Updates))
	}))
	t.Cleanup(n.Close)
	return n
}

func (n *testNode) got() []bus.Push {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.pushes)
}

// updates flattens every published update as "kind ref old new".
func (n *testNode) updates() []string {
	var out []string
	for _, p := range n.got() {
		for _, u := range p.Updates {
			out = append(out, fmt.Sprintf("%s %s %s %s", u.Kind(), u.Ref, short(u.Old), short(u.New)))
		}
	}
	return out
}

func short(id string) string { return id[:7] }

func TestHookPostReceiveEndToEnd(t *testing.T) {
	t.Parallel()
	n := newTestNode(t)
	w := newHookWorld(t, "GL_USERNAME=alice")
	w.install("--url", n.URL, "--repo", "acme/app")
	w.git(w.bare, "config", "refcast.token", "s3cret")
	old := w.git(w.wc, "rev-parse", "HEAD")
	tip := w.commit("second")
	w.git(w.wc, "tag", "-a", "-m", "v1", "v1")
	out := w.git(w.wc, "push", "origin", "main", "v1", "HEAD:refs/heads/feature")
	if strings.Contains(out, "s3cret") || strings.Contains(out, "warning") {
		t.Fatalf("push output: %s", out)
	}
	got := n.got()
	if len(got) != 1 {
		t.Fatalf("node got %d pushes, want 1", len(got))
	}
	p := got[0]
	if p.Repo != "acme/app" || p.Pusher != "alice" || p.Source != "post-receive" || len(p.Updates) != 3 || n.auth[0] != "Bearer s3cret" {
		t.Fatalf("push %+v auth %q", p, n.auth)
	}
	for _, u := range p.Updates {
		if u.Enriched != bus.EnrichFull {
			t.Errorf("%s enriched %q", u.Ref, u.Enriched)
		}
		if u.Ref == "refs/heads/main" && (u.Old != old || u.New != tip || u.Forced == nil || *u.Forced || *u.Commits != 1 || u.Commit.Subject != "second") {
			t.Errorf("main: %+v", u)
		}
	}
}

func TestHookSpoolsWhenNodeDownThenFlushes(t *testing.T) {
	t.Parallel()
	n := newTestNode(t)
	n.down.Store(true)
	w := newHookWorld(t)
	w.install("--url", n.URL)
	w.commit("while down")
	out := w.git(w.wc, "push", "origin", "main")
	if !strings.Contains(out, "refcast hook: warning:") || !strings.Contains(out, "spooled") {
		t.Fatalf("push output lacks the spool warning:\n%s", out)
	}
	spooled, _ := filepath.Glob(filepath.Join(w.bare, "refcast-spool", "*.push"))
	if len(spooled) != 1 {
		t.Fatalf("spool holds %v", spooled)
	}
	n.down.Store(false)
	out, err := w.refcast(w.bare, "", "hook", "flush")
	if err != nil || !strings.Contains(out, "published 1") {
		t.Fatalf("flush: %v\n%s", err, out)
	}
	if out, _ := w.refcast(w.bare, "", "hook", "flush"); !strings.Contains(out, "published 0") {
		t.Fatalf("second flush: %s", out)
	}
	if got := n.got(); len(got) != 1 || got[0].Repo != "srv" {
		t.Fatalf("node got %+v", got)
	}
}

func TestHookMisuse(t *testing.T) {
	t.Parallel()
	w := newHookWorld(t)
	a, b := strings.Repeat("1", 40), strings.Repeat("2", 40)
	cases := []struct {
		name, stdin, want string
		args              []string
	}{
		{"malformed line", a + " " + b + " refs/heads/x\n" + a + " " + b + "\n", "refcast hook: line 2: ", []string{"hook", "post-receive", "--url", "http://127.0.0.1:1"}},
		{"sha256 ids in a sha1 repository", strings.Repeat("1", 64) + " " + strings.Repeat("2", 64) + " refs/heads/x\n",
			"refs/heads/x: object id " + strings.Repeat("1", 64) + " has 64 hex digits, but this repository's object format is sha1 (40)",
			[]string{"hook", "post-receive", "--url", "http://127.0.0.1:1"}},
		{"unknown hook", "", "unknown hook", []string{"hook", "pre-receive"}},
		{"bad flag", "", "unknown flag --nope", []string{"hook", "post-receive", "--nope"}},
		{"txn without state", "", "exactly one argument", []string{"hook", "reference-transaction"}},
		{"both destinations", a + " " + b + " refs/heads/x\n", "keep one", []string{"hook", "post-receive", "--url", "http://x", "--redis", "redis://x"}},
		{"bad repo name", a + " " + b + " refs/heads/x\n", "repo name from --repo", []string{"hook", "post-receive", "--repo", "a b"}},
	}
	for _, tc := range cases {
		out, err := w.refcast(w.bare, tc.stdin, tc.args...)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %v, output %q; want exit 2 and %q", tc.name, err, out, tc.want)
		}
	}
	out, err := w.refcast(w.bare, "", "hook", "post-receive", "-h")
	if err != nil || !strings.Contains(out, "REFCAST_TOKEN") || !strings.Contains(out, "refcast.repoMap") {
		t.Errorf("-h: %v %s", err, out)
	}
}

func TestHookReferenceTransaction(t *testing.T) {
	t.Parallel()
	n := newTestNode(t)
	w := newHookWorld(t)
	w.install("--url", n.URL, "--mode", "reference-transaction")
	if _, err := os.Stat(filepath.Join(w.bare, "hooks", "post-receive")); err == nil {
		t.Fatal("post-receive installed too")
	}
	expect := func(step string, want ...string) {
		t.Helper()
		got := n.updates()
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: published\n  %v\nwant\n  %v", step, got, want)
		}
		n.mu.Lock()
		n.pushes = nil
		n.mu.Unlock()
	}
	c1 := w.git(w.wc, "rev-parse", "HEAD")
	c2 := w.commit("two")

	// A push: each update once (HEAD of the bare repo is not a ref under refs/).
	w.git(w.wc, "push", "-q", "origin", "main", "HEAD:refs/heads/side", "HEAD~1:refs/heads/old")
	expect("push", "update refs/heads/main "+short(c1)+" "+short(c2), "create refs/heads/side 0000000 "+short(c2), "create refs/heads/old 0000000 "+short(c1))
	for _, p := range n.got() {
		if p.Source != "reference-transaction" {
			t.Fatalf("source %q", p.Source)
		}
	}

	// A server-side update without an old value: git passes zero; the hook
	// recovers the real old value from the prepared state.
	w.git(w.bare, "update-ref", "refs/heads/side", c1)
	expect("update-ref", "update refs/heads/side "+short(c2)+" "+short(c1))

	// pack-refs rewrites every ref without changing any.
	w.git(w.bare, "pack-refs", "--all")
	expect("pack-refs")

	// Deleting a packed ref runs two transactions: published once.
	w.git(w.bare, "update-ref", "-d", "refs/heads/old")
	expect("update-ref -d", "delete refs/heads/old "+short(c1)+" 0000000")
	w.git(w.wc, "push", "-q", "origin", ":side")
	expect("push delete", "delete refs/heads/side "+short(c1)+" 0000000")

	// A merge in a worktree of the bare repository.
	w.git(w.wc, "push", "-q", "origin", "HEAD~1:refs/heads/topic")
	expect("topic", "create refs/heads/topic 0000000 "+short(c1))
	wt := filepath.Join(filepath.Dir(w.bare), "wt")
	w.git(w.bare, "worktree", "add", "-q", wt, "topic")
	w.git(wt, "merge", "-q", "--no-ff", "-m", "merge main", "main")
	merge := w.git(wt, "rev-parse", "HEAD")
	expect("merge in worktree", "update refs/heads/topic "+short(c1)+" "+short(merge))
}

// BenchmarkHookPostReceive runs the real hook process (the test binary as
// refcast) for a one-commit fast-forward on a real repository, publishing
// to a local node, and reports the median wall time per run.
func BenchmarkHookPostReceive(b *testing.B) {
	n := newTestNode(b)
	w := newHookWorld(b)
	w.git(w.bare, "config", "refcast.url", n.URL)
	old := w.git(w.wc, "rev-parse", "HEAD")
	tip := w.commit("bench")
	w.git(w.wc, "push", "-q", "origin", "main")
	stdin := old + " " + tip + " refs/heads/main\n"
	var times []time.Duration
	for b.Loop() {
		start := time.Now()
		if out, err := w.refcast(w.bare, stdin, "hook", "post-receive"); err != nil || out != "" {
			b.Fatalf("%v %s", err, out)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(times[len(times)*9/10].Microseconds())/1000, "p90-ms")
}
