package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/hook"
	"github.com/refcast/refcast/internal/testnode"
)

// The queue (install-hook --queue DIR): the hook script writes each push
// to DIR with shell builtins and exits; `refcast hook drain --queue DIR`
// (or serve --queue DIR) publishes it. These tests run real git, the
// script as install-hook writes it, and the drainer as a process.

// queueWorld is a directWorld whose hook queues to a directory a drainer
// process publishes from.
type queueWorld struct {
	*directWorld
	queue   string
	drainer *exec.Cmd
	log     string
}

func newQueueWorld(t *testing.T, extraEnv ...string) *queueWorld {
	t.Helper()
	w := &queueWorld{directWorld: newDirectWorld(t, true, extraEnv...)}
	w.queue = filepath.Join(t.TempDir(), "queue")
	if err := os.Mkdir(w.queue, 0o755); err != nil {
		t.Fatal(err)
	}
	w.log = filepath.Join(t.TempDir(), "drain.log")
	w.afterPush = w.waitDrained
	t.Cleanup(func() {
		w.stopDrainer()
		if t.Failed() {
			data, _ := os.ReadFile(w.log)
			t.Logf("drain log:\n%s", data)
		}
	})
	return w
}

// startDrainer starts `refcast hook drain --queue` with the world's
// environment and waits until it holds the queue.
func (w *queueWorld) startDrainer(args ...string) {
	w.t.Helper()
	logf, err := os.OpenFile(w.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(w.exe, append([]string{"hook", "drain", "--queue", w.queue}, args...)...)
	cmd.Env, cmd.Dir = w.env, w.t.TempDir()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.drainer = cmd
	waitFor(w.t, "the drainer to hold the queue", func() bool { return hook.QueueDrained(w.queue) })
}

// stopDrainer kills the drainer with SIGKILL: no chance to finish.
func (w *queueWorld) stopDrainer() {
	if w.drainer != nil {
		w.drainer.Process.Kill()
		w.drainer.Wait()
		w.drainer = nil
	}
}

// waitDrained waits until the queue holds no push: each is published (or
// spooled) before its file goes.
func (w *queueWorld) waitDrained() {
	w.t.Helper()
	waitFor(w.t, "the queue to drain", func() bool {
		n, err := hook.QueueDepth(w.queue)
		return err == nil && n == 0
	})
}

func (w *queueWorld) depth() int {
	w.t.Helper()
	n, err := hook.QueueDepth(w.queue)
	if err != nil {
		w.t.Fatal(err)
	}
	return n
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestHookQueuePublishesTheSame: the same pushes through the hook as a
// process and through the queue publish the same pushes, and neither
// starts git rev-parse, git config or git cat-file for them.
func TestHookQueuePublishesTheSame(t *testing.T) {
	t.Parallel()
	refTxn := []string{"--mode", "reference-transaction"}
	// The reference-transaction pushes: the post-receive scenario, then
	// changes made on the server (an update git does not verify, a
	// creation, a delete), where the script runs refcast as a process.
	refTxnRun := func(w *directWorld) {
		w.pushes()
		w.git(w.bare, "update-ref", "refs/heads/server-side", "main")
		w.git(w.bare, "update-ref", "refs/heads/main", "main~1")
		// Verified, so queued: a server-side change the drainer publishes.
		w.git(w.bare, "update-ref", "refs/heads/server-side", "main", w.git(w.bare, "rev-parse", "server-side"))
		w.git(w.bare, "update-ref", "-d", "refs/heads/server-side")
		w.commit("after the server's changes")
		w.push("-f", "main")
		if w.afterPush != nil {
			w.afterPush() // the server-side changes were not pushes
		}
	}
	// A commit in the non-bare repository's worktree (on a branch of its
	// own, so the pushes to main still fast-forward); git runs its hook
	// without GIT_DIR, so the hook asks git for the repository, with the
	// queue or without: not counted with the pushes' git calls.
	nonBareRun := func(w *directWorld) {
		w.git(w.bare, "checkout", "-q", "-b", "on-server")
		w.git(w.bare, "commit", "-q", "--allow-empty", "-m", "on the server")
		if w.afterPush != nil {
			w.afterPush()
		}
		w.hookGitCalls()
		w.pushes()
	}
	cases := []struct {
		name  string
		setup func(w *directWorld)
		mode  []string
		run   func(w *directWorld)
	}{
		{"bare", func(*directWorld) {}, nil, (*directWorld).pushes},
		{"sha256", (*directWorld).sha256, nil, (*directWorld).pushes},
		{"non-bare", (*directWorld).nonBare, nil, (*directWorld).pushes},
		{"bare reference-transaction", func(*directWorld) {}, refTxn, refTxnRun},
		{"sha256 reference-transaction", (*directWorld).sha256, refTxn, refTxnRun},
		{"non-bare reference-transaction", (*directWorld).nonBare, refTxn, nonBareRun},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got [2]string
			for i, queued := range []bool{false, true} {
				var w *directWorld
				if queued {
					q := newQueueWorld(t)
					w = q.directWorld
					tc.setup(w)
					w.install(append([]string{"--url", w.n.URL, "--queue", q.queue}, tc.mode...)...)
					q.startDrainer()
				} else {
					w = newDirectWorld(t, true)
					tc.setup(w)
					w.install(append([]string{"--url", w.n.URL}, tc.mode...)...)
				}
				w.hookGitCalls()
				tc.run(w)
				revParse, config, catFile := w.hookGitCallsAll()
				if revParse != 0 || config != 0 || catFile != 0 {
					t.Errorf("queued=%v: git rev-parse %d, git config %d, git cat-file --batch %d times, want none", queued, revParse, config, catFile)
				}
				if len(w.n.got()) == 0 {
					t.Fatal("nothing published")
				}
				got[i] = w.published()
			}
			if got[0] != got[1] {
				t.Fatalf("the hook process published\n%s\nthe queue\n%s", got[0], got[1])
			}
		})
	}
}

// TestHookQueueSurvivesTheDrainer: pushes made while no drainer runs wait
// in the queue and are published, in order, once one starts; a drainer
// killed with SIGKILL loses nothing, and a file published again (as after
// a kill between publishing and removing it) carries the same push id, so
// the node keeps one.
func TestHookQueueSurvivesTheDrainer(t *testing.T) {
	t.Parallel()
	w := newQueueWorld(t)
	w.afterPush = nil // nothing drains yet
	w.install("--url", w.n.URL, "--queue", w.queue)
	var want []string
	for i := range 3 {
		want = append(want, w.commit(fmt.Sprintf("queued %d", i)))
		w.git(w.wc, "push", "-q", "origin", "main")
	}
	if d := w.depth(); d != 3 || len(w.n.got()) != 0 {
		t.Fatalf("no drainer: %d files queued and %d pushes published, want 3 and 0", d, len(w.n.got()))
	}
	// Keep a copy of the oldest file, as a drainer killed before removing
	// it would have left it.
	ents, _ := os.ReadDir(w.queue)
	var oldest os.FileInfo
	var oldestData []byte
	for _, e := range ents {
		fi, _ := e.Info()
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && (oldest == nil || fi.ModTime().Before(oldest.ModTime())) {
			oldest = fi
			oldestData, _ = os.ReadFile(filepath.Join(w.queue, e.Name()))
		}
	}

	w.startDrainer()
	w.waitDrained()
	w.stopDrainer()
	for i := range 2 {
		want = append(want, w.commit(fmt.Sprintf("while killed %d", i)))
		w.git(w.wc, "push", "-q", "origin", "main")
	}
	if d := w.depth(); d != 2 {
		t.Fatalf("drainer killed: %d files queued, want 2", d)
	}
	// The copy comes back with its name, content and time.
	path := filepath.Join(w.queue, oldest.Name())
	if err := os.WriteFile(path, oldestData, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path, oldest.ModTime(), oldest.ModTime())
	w.startDrainer()
	w.waitDrained()

	var got []string
	for _, p := range w.n.got() {
		for _, u := range p.Updates {
			got = append(got, u.New)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("published tips\n%v\nwant, in push order, once each\n%v", got, want)
	}
}

// TestHookQueueReferenceTransaction: in reference-transaction mode the
// script queues a transaction of verified updates (a push's fast-forward
// and forced update) and starts no refcast for any of its states; one
// with a zero id (a new branch, a delete) runs refcast as a process and is
// published before git push returns, after the repository's pushes queued
// before it.
func TestHookQueueReferenceTransaction(t *testing.T) {
	t.Parallel()
	w := newQueueWorld(t)
	w.afterPush = nil // nothing drains yet
	w.install("--url", w.n.URL, "--queue", w.queue, "--mode", "reference-transaction")
	txnState := filepath.Join(w.bare, "refcast-txn.json")

	// A fast-forward: queued; its prepared state recorded nothing.
	ff := w.commit("fast-forward")
	w.git(w.wc, "push", "-q", "origin", "main")
	if d, n := w.depth(), len(w.n.got()); d != 1 || n != 0 {
		t.Fatalf("fast-forward: %d queued, %d published; want 1 and 0", d, n)
	}
	if _, err := os.Stat(txnState); err == nil {
		t.Errorf("the prepared state of a verified update left %s", txnState)
	}
	// A new branch: a zero old id, so a process, which waits for the
	// queued push ahead of it: at most --timeout (2 s) with no drainer,
	// then it goes ahead and says so.
	out := w.git(w.wc, "push", "origin", "HEAD:refs/heads/topic")
	if !strings.Contains(out, "published ahead of 1 older push") {
		t.Errorf("a new branch with a push queued ahead and no drainer: git push said\n%s\nwant a warning that it went ahead", out)
	}
	if d, n := w.depth(), len(w.n.got()); d != 1 || n != 1 {
		t.Fatalf("new branch: %d queued, %d published; want 1 and 1", d, n)
	}
	w.startDrainer()
	w.waitDrained()
	got := w.n.updates()
	want := []string{
		"create refs/heads/topic 0000000 " + short(ff),
		"update refs/heads/main " + short(w.git(w.wc, "rev-parse", "main~1")) + " " + short(ff),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("published\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, p := range w.n.got() {
		if p.Source != hook.SourceReferenceTransaction {
			t.Errorf("push %s has source %q, want %q", p.ID, p.Source, hook.SourceReferenceTransaction)
		}
	}

	// With the drainer running, a forced update and a delete keep their
	// order: the delete's process waits for the queued forced update.
	w.git(w.wc, "reset", "-q", "--hard", "HEAD~1")
	forced := w.commit("forced")
	w.git(w.wc, "push", "-q", "-f", "origin", "main")
	w.git(w.wc, "push", "-q", "origin", ":topic")
	w.waitDrained()
	got = w.n.updates()[2:]
	want = []string{
		"update refs/heads/main " + short(ff) + " " + short(forced),
		"delete refs/heads/topic " + short(ff) + " 0000000",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("then published\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestHookQueueFallsBack: where the queue cannot carry a push, the script
// runs refcast as without a queue, and the push is published before git
// push returns, with no drainer running.
func TestHookQueueFallsBack(t *testing.T) {
	t.Parallel()
	w := newQueueWorld(t)
	w.afterPush = nil
	w.install("--url", w.n.URL, "--queue", w.queue)

	// git -c exports GIT_CONFIG_PARAMETERS to its children: here
	// receive-pack, and so its hooks (a local push clears the client's).
	w.commit("with -c")
	w.git(w.wc, "push", "-q", "--receive-pack=git -c refcast.unused=1 receive-pack", "origin", "main")
	if n := len(w.n.got()); n != 1 || w.depth() != 0 {
		t.Fatalf("GIT_CONFIG_PARAMETERS set: %d published, %d queued; want 1 and 0", n, w.depth())
	}
	// The queue directory is gone (a typo, an unmounted disk).
	os.Remove(w.queue)
	w.commit("no queue")
	w.git(w.wc, "push", "-q", "origin", "main")
	if n := len(w.n.got()); n != 2 {
		t.Fatalf("queue missing: %d published, want 2", n)
	}
}

// TestHookQueueSpoolsWhenNodeDown: the drainer spools a push the node
// refuses with 503, as the hook does, to the same spool (a relative one
// is the repository's, as for the hook process), and `refcast hook
// flush` publishes it once; for a queued reference-transaction push too.
func TestHookQueueSpoolsWhenNodeDown(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{hook.ModePostReceive, hook.ModeReferenceTransaction} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			w := newQueueWorld(t, "REFCAST_SPOOL=relative-spool")
			w.install("--url", w.n.URL, "--queue", w.queue, "--mode", mode)
			w.startDrainer()
			w.commit("first")
			w.push("main") // reference-transaction: a creation, published by a process
			first := len(w.n.got())
			w.n.down.Store(true)
			tip := w.commit("while down")
			w.push("main") // a fast-forward: queued; returns once the drainer took it
			spooled, _ := filepath.Glob(filepath.Join(w.bare, "relative-spool", "*.push"))
			if len(spooled) != 1 || len(w.n.got()) != first {
				t.Fatalf("node down: %d spooled, %d published; want 1 and %d", len(spooled), len(w.n.got()), first)
			}
			w.n.down.Store(false)
			for range 2 {
				if out, err := w.refcast(w.bare, "", "hook", "flush"); err != nil {
					t.Fatalf("hook flush: %v\n%s", err, out)
				}
			}
			if got := w.n.got()[first:]; len(got) != 1 || got[0].Updates[0].New != tip || got[0].Source != mode {
				t.Fatalf("after flush: %+v, want one %s push of %s", got, mode, tip)
			}
		})
	}
}

// TestInstallHookQueueMisuse: install-hook refuses a queue it cannot use,
// and warns about one no drainer holds.
func TestInstallHookQueueMisuse(t *testing.T) {
	t.Parallel()
	w := newHookWorld(t)
	n := newTestNode(t)
	queue := t.TempDir()
	open := t.TempDir()
	os.Chmod(open, 0o777)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--queue", "relative/dir"}, "want an absolute path"},
		{[]string{"--queue", filepath.Join(queue, "missing")}, "not a directory"},
		{[]string{"--queue", open}, "writable by group or others"},
		{[]string{"--queue", queue + "\ntouch /tmp/x\n#"}, "control character"},
	} {
		out, err := w.refcast(w.bare, "", append([]string{"install-hook", w.bare, "--binary", w.exe, "--url", n.URL}, tc.args...)...)
		if code := exitOf(err); code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("install-hook %v: exit %d\n%s\nwant exit 2 and %q", tc.args, code, out, tc.want)
		}
	}
	out, err := w.refcast(w.bare, "", "install-hook", w.bare, "--binary", w.exe, "--url", n.URL, "--queue", queue)
	if err != nil || !strings.Contains(out, "no 'refcast hook drain --queue") {
		t.Fatalf("install-hook --queue without a drainer: %v\n%s\nwant success and a warning", err, out)
	}
	out, err = w.refcast(w.bare, "", "hook", "drain")
	if exitOf(err) != 2 || !strings.Contains(out, "--queue DIR is required") {
		t.Fatalf("hook drain without --queue: %v\n%s", err, out)
	}
	out, err = w.refcast(w.bare, "", "hook", "drain", "--queue", queue, "--repo", "one/name")
	if exitOf(err) != 2 || !strings.Contains(out, "--repo and --pusher") {
		t.Fatalf("hook drain --repo: %v\n%s", err, out)
	}
	out, err = w.refcast(w.bare, "", "hook", "drain", "--queue", open)
	if exitOf(err) != 2 || !strings.Contains(out, "writable by group or others") {
		t.Fatalf("hook drain on a 0777 queue: %v\n%s", err, out)
	}
}

// TestServeQueue: a node given --queue publishes the queue into its own
// bus, and refuses a queue it cannot drain at start.
func TestServeQueue(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	queue := filepath.Join(t.TempDir(), "queue")
	out, err := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--queue", queue).CombinedOutput()
	if exitOf(err) != 2 || !strings.Contains(string(out), "create it with mkdir") {
		t.Fatalf("serve --queue MISSING: %v\n%s\nwant exit 2 at start", err, out)
	}
	os.Mkdir(queue, 0o755)
	// A serve that fails after opening the queue (its address is taken)
	// exits, rather than wait for its queue drainer.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a guard against a hang, not a measure
	defer cancel()
	out, err = exec.CommandContext(ctx, bin, "serve", "--listen", taken.Addr().String(), "--data", t.TempDir(), "--queue", queue).CombinedOutput()
	if ctx.Err() != nil || err == nil {
		t.Fatalf("serve --queue on a taken address: %v (context: %v)\n%s\nwant it to exit with an error", err, ctx.Err(), out)
	}
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", "tok", "--queue", queue)
	out, err = exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--queue", queue).CombinedOutput()
	if exitOf(err) != 2 || !strings.Contains(string(out), "already drains") {
		t.Fatalf("second serve --queue on the same queue: %v\n%s\nwant exit 2 at start", err, out)
	}

	dir := t.TempDir()
	bare, work := filepath.Join(dir, "srv.git"), filepath.Join(dir, "wc")
	testnode.Git(t, dir, nil, "init", "-q", "--bare", "-b", "main", bare)
	if out, err := exec.Command(bin, "install-hook", bare, "--url", node.URL, "--repo", "acme/queued", "--queue", queue).CombinedOutput(); err != nil {
		t.Fatalf("install-hook: %v\n%s", err, out)
	}
	testnode.Git(t, bare, nil, "config", "refcast.token", "tok")
	stream := testnode.Subscribe(t, node.URL+"/v1/events?repo=acme/queued", nil)
	testnode.Git(t, dir, nil, "clone", "-q", bare, work)
	testnode.Git(t, work, nil, "commit", "-q", "--allow-empty", "-m", "queued")
	tip := testnode.Git(t, work, nil, "rev-parse", "HEAD")
	testnode.Git(t, work, nil, "push", "-q", "origin", "HEAD:main")
	f := stream.Next(t, 30*time.Second, "ref")
	if !strings.Contains(f.Data, tip) {
		t.Fatalf("event %q, want the push of %s", f.Data, tip)
	}
}

// TestHookQueueFallbackKeepsOrder: a push the script cannot queue waits
// for the same repository's older queued pushes, so it is published
// after them; with no drainer it goes ahead after the timeout, saying so.
func TestHookQueueFallbackKeepsOrder(t *testing.T) {
	t.Parallel()
	w := newQueueWorld(t, "REFCAST_TIMEOUT=30s")
	w.afterPush = nil
	w.install("--url", w.n.URL, "--queue", w.queue)
	first := w.commit("queued")
	w.git(w.wc, "push", "-q", "origin", "main")
	second := w.commit("not queued")
	done := make(chan string, 1)
	go func() {
		// git -c in receive-pack: the script cannot carry it, so refcast
		// runs as a process.
		out, _ := w.run(w.wc, "", "/usr/bin/git", "push", "-q", "--receive-pack=git -c refcast.unused=1 receive-pack", "origin", "main")
		done <- out
	}()
	// receive-pack moves the ref, then runs the hook, which waits.
	waitFor(t, "receive-pack to update main", func() bool {
		out, _ := w.run(w.bare, "", "/usr/bin/git", "rev-parse", "main")
		return strings.TrimSpace(out) == second
	})
	w.startDrainer()
	if out := <-done; strings.Contains(out, "published ahead") {
		t.Fatalf("push output: %s", out)
	}
	var got []string
	for _, p := range w.n.got() {
		got = append(got, p.Updates[0].New)
	}
	if strings.Join(got, " ") != first+" "+second {
		t.Fatalf("published %v, want %s then %s", got, first, second)
	}

	// No drainer: it goes ahead after --timeout, with a warning.
	w.stopDrainer()
	w.commit("queued, no drainer")
	w.git(w.wc, "push", "-q", "origin", "main")
	w.commit("not queued, no drainer")
	for i, kv := range w.env {
		if strings.HasPrefix(kv, "REFCAST_TIMEOUT=") {
			w.env[i] = "REFCAST_TIMEOUT=200ms"
		}
	}
	out, err := w.run(w.wc, "", "/usr/bin/git", "push", "-q", "--receive-pack=git -c refcast.unused=1 receive-pack", "origin", "main")
	if err != nil || !strings.Contains(out, "published ahead of 1 older push") {
		t.Fatalf("push with no drainer: %v\n%s\nwant a warning that it went ahead", err, out)
	}
}
