// Package testnode runs the real refcast binary, real git repositories and
// raw SSE clients for end-to-end tests. It is for tests only.
package testnode

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Require skips the test when a binary is missing, loudly, and fails it
// under CI=true, where .ci/run must have installed it.
func Require(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required under CI=true but not installed: %v", b, err)
			}
			t.Skipf("SKIPPING: %s is not installed (%v); install it to run this test", b, err)
		}
	}
}

// binary is one build of ./cmd/refcast, made at most once per process.
type binary struct {
	once sync.Once
	path string
	err  error
}

var plainBin, shippedBin binary

// Build compiles ./cmd/refcast once per test process and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	return plainBin.build(t, "refcast-bin-", nil)
}

// BuildShipped compiles ./cmd/refcast once per process as the Makefile and
// deploy/Dockerfile ship it: CGO_ENABLED=0, -trimpath, -ldflags "-s -w". A
// plain `go build` with a C compiler present links libc dynamically and
// keeps the symbol tables, and that binary starts ~1.5 ms later on a
// 2-core machine (`refcast version`, p50 of 100 runs): what benchmarks of
// process start measure.
func BuildShipped(t testing.TB) string {
	t.Helper()
	return shippedBin.build(t, "refcast-shipped-", []string{"CGO_ENABLED=0"}, "-trimpath", "-ldflags", "-s -w")
}

// build runs `go build flags -o <temp dir>/refcast ./cmd/refcast` from the
// module's root, with env added, the first time it is called.
func (b *binary) build(t testing.TB, prefix string, env []string, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			b.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", prefix)
		if err != nil {
			b.err = err
			return
		}
		bin := filepath.Join(dir, "refcast")
		cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", bin, "./cmd/refcast")...)
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/refcast: %w\n%s", err, out)
			return
		}
		b.path = bin
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	// Never the same address twice in one test process: nodes listen with
	// SO_REUSEPORT (rolling restarts), so two tests handed the same freed
	// port would both bind it and the kernel would split their clients
	// between the two nodes instead of failing.
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, seen := handedOut.LoadOrStore(addr, true); !seen {
			return addr
		}
	}
	t.Fatal("testnode: no fresh loopback port after 100 tries")
	return ""
}

// handedOut holds every address FreeAddr returned in this process.
var handedOut sync.Map

// Node is a running `refcast serve` process.
type Node struct {
	URL  string
	Addr string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Start runs `refcast serve --listen ADDR args...` until the test ends and
// waits until /readyz answers 200. addr may be "" for a free one.
func Start(t testing.TB, bin, addr string, args ...string) *Node {
	t.Helper()
	if addr == "" {
		addr = FreeAddr(t)
	}
	logPath := filepath.Join(t.TempDir(), "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--listen", addr}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start refcast serve: %v", err)
	}
	n := &Node{URL: "http://" + addr, Addr: addr, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("refcast serve %s log:\n%s", addr, b)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if res, err := http.Get(n.URL + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return n
			}
		}
		select {
		case <-n.done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("refcast serve exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("refcast serve on %s not ready after 30s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is the node's process id (for tools that read /proc).
func (n *Node) Pid() int { return n.cmd.Process.Pid }

// Kill stops the node at once (SIGKILL) and waits for it.
func (n *Node) Kill() {
	_ = n.cmd.Process.Kill()
	<-n.done
}

// Stop asks the node to shut down (SIGTERM) and waits up to d.
func (n *Node) Stop(t testing.TB, d time.Duration) {
	t.Helper()
	_ = n.cmd.Process.Signal(os.Interrupt)
	select {
	case <-n.done:
	case <-time.After(d):
		t.Errorf("node %s did not stop within %v", n.Addr, d)
		n.Kill()
	}
}

// Git runs git with a clean, deterministic environment and fails the test
// on error. It returns the trimmed output.
func Git(t testing.TB, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(GitEnv(t), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

var homeOnce sync.Map

// GitEnv is an environment for git that ignores the user's and system's
// configuration.
func GitEnv(t testing.TB) []string {
	home, _ := homeOnce.LoadOrStore(t.Name(), t.TempDir())
	env := []string{"HOME=" + home.(string), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Ada Lovelace", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada Lovelace", "GIT_COMMITTER_EMAIL=ada@example.com", "PATH=" + os.Getenv("PATH"),
		// No background flush: tests that spool check the spool and flush
		// by hand, and a flusher must not outlive them retrying a dead
		// node. The test of the background flush turns it back on.
		"REFCAST_FLUSH_BACKGROUND=false",
		// Enrichment is bounded by a time budget (100 ms by default): on a
		// loaded machine an update came out "partial". Tests check what is
		// enriched, not how fast, so the budget is ample.
		"REFCAST_ENRICH_BUDGET=1h"}
	return env
}

// Frame is one SSE frame.
type Frame struct {
	ID, Event, Data string
}

// Stream is a raw SSE client reading frames in the background.
type Stream struct {
	Frames chan Frame
	cancel context.CancelFunc
	done   chan struct{}
}

// Subscribe opens url (a full /v1/events URL) with optional headers and
// reads frames until the test ends. Heartbeats and retry lines are skipped.
func Subscribe(t testing.TB, url string, header http.Header) *Stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("subscribe %s: %v", url, err)
	}
	if res.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("subscribe %s: status %d", url, res.StatusCode)
	}
	s := &Stream{Frames: make(chan Frame, 10000), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.Frames)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var f Frame
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if f.Event != "" || f.Data != "" {
					s.Frames <- f
				}
				f = Frame{}
			case strings.HasPrefix(line, "id: "):
				f.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				f.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				f.Data = line[6:]
			}
		}
	}()
	t.Cleanup(s.Close)
	return s
}

// Close ends the stream and waits for its reader.
func (s *Stream) Close() {
	s.cancel()
	<-s.done
}

// Next returns the next frame of the given event types, failing the test
// after timeout.
func (s *Stream) Next(t testing.TB, timeout time.Duration, events ...string) Frame {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case f, ok := <-s.Frames:
			if !ok {
				t.Fatalf("stream ended while waiting for %v", events)
			}
			for _, e := range events {
				if f.Event == e {
					return f
				}
			}
		case <-deadline:
			t.Fatalf("no %v frame within %v", events, timeout)
		}
	}
}

// None fails the test if a frame of the given types arrives within d.
func (s *Stream) None(t testing.TB, d time.Duration, events ...string) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-s.Frames:
			if !ok {
				return
			}
			for _, e := range events {
				if f.Event == e {
					t.Fatalf("unexpected %s frame: %s", f.Event, f.Data)
				}
			}
		case <-deadline:
			return
		}
	}
}
