package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/hook"
	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// TestHookRedisOutageSpoolFlush is issue 6's outage proof with the real
// binary, real git and a real redis-server (AOF): while Redis hangs or is
// down, pushes succeed within the hook's timeout, with one warning line,
// and every push (several at once, from several clones into the same spool)
// waits in <bare>/refcast-spool; after Redis comes back, `refcast hook
// flush` publishes each exactly once, the node recovers by itself, an SSE
// client that reconnects with Last-Event-ID receives each event exactly
// once and in order per branch, and a second flush publishes nothing.
func TestHookRedisOutageSpoolFlush(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git", "redis-server")
	bin := testnode.Build(t)
	// DEBUG SLEEP makes Redis hang (accepting connections, answering
	// nothing): the case where only the hook's timeout bounds the push.
	rs := redistest.Start(t, redistest.Options{AOF: true, Args: []string{"enable-debug-command local"}})
	node := testnode.Start(t, bin, "", "--redis", rs.URL(), "--drain", "100ms", "--heartbeat", "500ms")

	// The hook's timeout is what bounds a push while Redis hangs. The test
	// proves it by what happened, not by how long it took: Redis hangs for
	// redisHang, far longer than the hook waits, and the push must have
	// returned while Redis was still hung.
	const hookTimeout = 500 * time.Millisecond
	const redisHang = 120 // seconds of DEBUG SLEEP; cut short by a kill
	dir := t.TempDir()
	bare := filepath.Join(dir, "app.git")
	testnode.Git(t, dir, nil, "init", "-q", "--bare", "-b", "main", bare)
	runBin(t, bin, "install-hook", bare, "--redis", rs.URL(), "--repo", "acme/app")
	testnode.Git(t, bare, nil, "config", "refcast.timeout", hookTimeout.String())
	spool := filepath.Join(bare, hook.DefaultSpoolName)

	tap := newSSETap(t, node.URL+"/v1/events?repo=acme/app")
	tap.waitHello(t, 10*time.Second)

	// Redis up: the hook publishes directly, nothing is spooled.
	work := filepath.Join(dir, "work")
	testnode.Git(t, dir, nil, "clone", "-q", bare, work)
	before := commitFile(t, work, "before outage")
	if _, stderr, _ := gitPush(work, "HEAD:main"); strings.Contains(stderr, "refcast hook") {
		t.Fatalf("push with Redis up warned:\n%s", stderr)
	}
	if ev := tap.next(t, 10*time.Second); ev.ev.New != before {
		t.Fatalf("event before the outage: new = %s, want %s", ev.ev.New, before)
	}
	assertSpooled(t, spool, 0)

	type pushed struct{ ref, sha string }
	var want []pushed // in push order per ref

	// Redis hangs during the push: only the timeout bounds it.
	hung := make(chan error, 1)
	sleeper := rs.Client()
	go func() {
		hung <- sleeper.Do(context.Background(), "DEBUG", "SLEEP", strconv.Itoa(redisHang)).Err()
	}()
	waitRedisHung(t, rs)
	sha := commitFile(t, work, "while redis hangs")
	took, stderr, err := gitPush(work, "HEAD:main")
	if err != nil {
		t.Fatalf("push while Redis hangs failed: %v\n%s", err, stderr)
	}
	select {
	case err := <-hung:
		t.Fatalf("the push returned only after Redis answered again (DEBUG SLEEP: %v): the hook timeout did not bound it", err)
	default: // Redis is still hung: the hook's timeout ended the wait
	}
	assertOneWarning(t, stderr)
	t.Logf("push while Redis hangs: %v (hook timeout %v)", took, hookTimeout)
	assertSpooled(t, spool, 1)
	want = append(want, pushed{"refs/heads/main", sha})

	// Redis killed while hung (appendfsync always: nothing acknowledged is
	// lost): the push succeeds, spooled behind the first.
	rs.Kill()
	<-hung // the sleeper's connection broke
	sha = commitFile(t, work, "while redis is down")
	took, stderr, err = gitPush(work, "HEAD:main")
	if err != nil {
		t.Fatalf("push while Redis is down failed: %v\n%s", err, stderr)
	}
	assertOneWarning(t, stderr)
	t.Logf("push while Redis is down: %v", took)
	assertSpooled(t, spool, 2)
	want = append(want, pushed{"refs/heads/main", sha})

	// Concurrent pushes from several clones into the same spool.
	const clones, perClone = 4, 3
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		failure []string
	)
	perRef := make([][]pushed, clones)
	for c := range clones {
		testnode.Git(t, dir, nil, "clone", "-q", bare, filepath.Join(dir, fmt.Sprintf("clone%d", c)))
	}
	for c := range clones {
		w := filepath.Join(dir, fmt.Sprintf("clone%d", c))
		ref := fmt.Sprintf("refs/heads/feature/%d", c)
		wg.Go(func() {
			for i := range perClone {
				sha, err := tryCommitFile(w, fmt.Sprintf("clone %d push %d", c, i))
				if err == nil {
					var stderr string
					_, stderr, err = gitPush(w, "HEAD:"+ref)
					if err == nil && strings.Count(stderr, "refcast hook:") != 1 {
						err = fmt.Errorf("want one warning line, stderr:\n%s", stderr)
					}
				}
				mu.Lock()
				if err != nil {
					failure = append(failure, fmt.Sprintf("clone %d push %d: %v", c, i, err))
				} else {
					perRef[c] = append(perRef[c], pushed{ref, sha})
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failure) > 0 {
		t.Fatalf("concurrent pushes while Redis is down:\n%s", strings.Join(failure, "\n"))
	}
	for _, p := range perRef {
		want = append(want, p...)
	}
	assertSpooled(t, spool, len(want))
	tap.none(t, 200*time.Millisecond)

	// Redis back (same port, AOF): nothing is published until a flush.
	rs.Restart()
	tap.none(t, 500*time.Millisecond)
	assertSpooled(t, spool, len(want))

	out := runFlush(t, bin, bare)
	if wantOut := fmt.Sprintf("published %d, quarantined 0, pending 0", len(want)); !strings.Contains(out, wantOut) {
		t.Fatalf("flush: %q, want %q", out, wantOut)
	}
	assertSpooled(t, spool, 0)

	// The client receives every spooled push exactly once, in push order
	// per branch (the spool keeps the order).
	got := map[string][]string{}
	pushIDs := map[string]bool{}
	for range want {
		a := tap.next(t, 20*time.Second)
		got[a.ev.Ref] = append(got[a.ev.Ref], a.ev.New)
		if pushIDs[a.ev.PushID] {
			t.Errorf("push %s delivered twice", a.ev.PushID)
		}
		pushIDs[a.ev.PushID] = true
	}
	wantRef := map[string][]string{}
	for _, p := range want {
		wantRef[p.ref] = append(wantRef[p.ref], p.sha)
	}
	for ref, shas := range wantRef {
		if strings.Join(got[ref], ",") != strings.Join(shas, ",") {
			t.Errorf("%s: received %v, want %v", ref, got[ref], shas)
		}
	}
	tap.none(t, time.Second)

	out = runFlush(t, bin, bare)
	if !strings.Contains(out, "published 0, quarantined 0, pending 0") {
		t.Fatalf("second flush: %q, want nothing published", out)
	}
	tap.none(t, 500*time.Millisecond)
	if n := tap.resets(); n > 0 {
		t.Errorf("client got %d reset(s); with AOF nothing was lost", n)
	}
	t.Logf("SSE client connected %d time(s)", tap.connects())

	// And the hook publishes directly again.
	sha = commitFile(t, work, "after recovery")
	if _, stderr, err := gitPush(work, "HEAD:main"); err != nil || strings.Contains(stderr, "refcast hook") {
		t.Fatalf("push after recovery: %v\n%s", err, stderr)
	}
	if a := tap.next(t, 10*time.Second); a.ev.New != sha {
		t.Fatalf("event after recovery: %s, want %s", a.ev.New, sha)
	}
	assertSpooled(t, spool, 0)
}

// waitRedisHung returns once Redis stops answering (DEBUG SLEEP running).
// It speaks RESP on a raw connection: go-redis ignores context deadlines
// for reads by default.
func waitRedisHung(t *testing.T, rs *redistest.Server) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", rs.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = c.Write([]byte("PING\r\n"))
		if err == nil {
			_, err = c.Read(make([]byte, 16))
		}
		c.Close()
		if err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("Redis still answers PING: DEBUG SLEEP did not start")
}

func assertOneWarning(t *testing.T, stderr string) {
	t.Helper()
	if n := strings.Count(stderr, "refcast hook:"); n != 1 || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "spooled") {
		t.Errorf("want exactly one 'refcast hook: warning: ... spooled' line, got %d in:\n%s", n, stderr)
	}
}

// assertSpooled checks the spool holds n push files.
func assertSpooled(t *testing.T, dir string, n int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var files []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".push") {
			files = append(files, e.Name())
		}
	}
	if len(files) != n {
		t.Fatalf("spool %s holds %d push file(s), want %d: %v", dir, len(files), n, files)
	}
	if _, err := os.Stat(filepath.Join(dir, hook.QuarantineDir)); err == nil {
		t.Fatalf("spool has a quarantine directory")
	}
}

// runFlush runs `refcast hook flush` inside the bare repository.
func runFlush(t *testing.T, bin, bare string) string {
	t.Helper()
	cmd := exec.Command(bin, "hook", "flush")
	cmd.Dir = bare
	cmd.Env = append(testnode.GitEnv(t), "GIT_DIR="+bare)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("refcast hook flush: %v\n%s", err, out)
	}
	return string(out)
}

// commitFile commits a change to a small file and returns the commit id.
func commitFile(t testing.TB, work, msg string) string {
	t.Helper()
	sha, err := tryCommitFile(work, msg)
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

// tryCommitFile is commitFile for goroutines other than the test's.
func tryCommitFile(work, msg string) (string, error) {
	if err := os.WriteFile(filepath.Join(work, "file.txt"), []byte(msg+"\n"+strings.Repeat("x", 200)+"\n"), 0o644); err != nil {
		return "", err
	}
	env := gitEnvFor(work)
	for _, args := range [][]string{{"add", "file.txt"}, {"commit", "-q", "-m", msg}} {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = work, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	cmd := exec.Command("git", "rev-parse", "HEAD")
	cmd.Dir, cmd.Env = work, env
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// gitEnvFor is testnode.GitEnv without a testing.TB (usable off the test
// goroutine): no user or system configuration, a fixed identity.
func gitEnvFor(dir string) []string {
	return []string{"HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Ada Lovelace", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada Lovelace", "GIT_COMMITTER_EMAIL=ada@example.com", "PATH=" + os.Getenv("PATH"),
		"REFCAST_FLUSH_BACKGROUND=false", "REFCAST_ENRICH_BUDGET=1h"} // as testnode.GitEnv
}

// gitPush pushes HEAD to origin as refspec and returns its wall time and
// standard error; safe off the test goroutine.
func gitPush(work, refspec string, extraEnv ...string) (time.Duration, string, error) {
	cmd := exec.Command("git", "push", "-q", "origin", refspec)
	cmd.Dir = work
	cmd.Env = append(gitEnvFor(work), extraEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	return time.Since(start), stderr.String(), err
}

// sseArrival is one ref event and when the client read it.
type sseArrival struct {
	at time.Time
	ev bus.Event
}

// sseTap is an SSE client that reconnects (with Last-Event-ID) whenever
// its stream ends or cannot be opened, as a browser's EventSource does,
// and timestamps every ref event as its frame is read.
type sseTap struct {
	url    string
	events chan sseArrival // ref events, in arrival order
	hello  chan struct{}   // one value per hello frame (dropped when full)
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex // guards the fields below
	nConnect int
	nReset   int
}

func newSSETap(t testing.TB, url string) *sseTap {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sseTap{url: url, events: make(chan sseArrival, 10000), hello: make(chan struct{}, 100), cancel: cancel, done: make(chan struct{})}
	go s.run(ctx)
	t.Cleanup(func() { s.cancel(); <-s.done })
	return s
}

func (s *sseTap) run(ctx context.Context) {
	defer close(s.done)
	lastID := ""
	for ctx.Err() == nil {
		lastID = s.stream(ctx, lastID)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stream reads one connection until it ends and returns the last id seen.
func (s *sseTap) stream(ctx context.Context, lastID string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return lastID
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return lastID
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return lastID
	}
	s.mu.Lock()
	s.nConnect++
	s.mu.Unlock()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var id, event, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			at := time.Now()
			if id != "" {
				lastID = id
			}
			switch event {
			case "hello":
				select {
				case s.hello <- struct{}{}:
				default:
				}
			case "reset":
				s.mu.Lock()
				s.nReset++
				s.mu.Unlock()
			case "ref":
				var ev bus.Event
				if json.Unmarshal([]byte(data), &ev) == nil {
					s.events <- sseArrival{at: at, ev: ev}
				}
			}
			id, event, data = "", "", ""
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		}
	}
	return lastID
}

func (s *sseTap) waitHello(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case <-s.hello:
	case <-time.After(d):
		t.Fatalf("no hello from %s within %v", s.url, d)
	}
}

func (s *sseTap) next(t testing.TB, d time.Duration) sseArrival {
	t.Helper()
	select {
	case a := <-s.events:
		return a
	case <-time.After(d):
		t.Fatalf("no ref event from %s within %v", s.url, d)
		return sseArrival{}
	}
}

// none fails the test if a ref event arrives within d.
func (s *sseTap) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case a := <-s.events:
		t.Fatalf("unexpected ref event: %s %s -> %s (push %s)", a.ev.Ref, a.ev.Old, a.ev.New, a.ev.PushID)
	case <-time.After(d):
	}
}

func (s *sseTap) connects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nConnect
}

func (s *sseTap) resets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nReset
}
