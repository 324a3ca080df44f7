package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/refcast/refcast/internal/testnode"
)

// haproxyServers returns the server lines of deploy/haproxy.cfg: name to
// default address (the part after "-" in "${VAR-default}").
func haproxyServers(t *testing.T) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\s*server\s+(\S+)\s+"\$\{(\w+)-([^}]+)\}"`)
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(readFile(t, "deploy/haproxy.cfg")), -1) {
		out[m[1]] = m[3]
	}
	if len(out) == 0 {
		t.Fatal(`deploy/haproxy.cfg: no server lines of the form server NAME "${VAR-default}"`)
	}
	return out
}

// haproxyEnv returns the environment that points deploy/haproxy.cfg at the
// given backends and binds.
func haproxyEnv(t *testing.T, backends []*backend, bind, statsBind string) []string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\s*server\s+(\S+)\s+"\$\{(\w+)-`)
	ms := re.FindAllStringSubmatch(string(readFile(t, "deploy/haproxy.cfg")), -1)
	if len(ms) != len(backends) {
		t.Fatalf("haproxy.cfg has %d servers, test has %d backends", len(ms), len(backends))
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"REFCAST_LB_BIND=" + bind,
		"REFCAST_LB_STATS_BIND=" + statsBind,
		"REFCAST_CHECK_INTER=200ms",
	}
	for i, m := range ms {
		env = append(env, m[2]+"="+backends[i].addr)
	}
	return env
}

func TestHAProxyConfigValid(t *testing.T) {
	haproxy := needTool(t, "haproxy", "/usr/sbin/haproxy")
	cfg, _ := filepath.Abs(filepath.Join(root, "deploy/haproxy.cfg"))
	tests := []struct {
		name string
		env  []string
	}{
		// The compose defaults: refcast1..3 do not resolve here, and
		// init-addr none keeps that from being an error.
		{"compose defaults", []string{"PATH=" + os.Getenv("PATH")}},
		{"loopback", []string{
			"PATH=" + os.Getenv("PATH"),
			"REFCAST_LB_BIND=127.0.0.1:18080", "REFCAST_LB_STATS_BIND=127.0.0.1:18404",
			"REFCAST1_ADDR=127.0.0.1:18081", "REFCAST2_ADDR=127.0.0.1:18082", "REFCAST3_ADDR=127.0.0.1:18083",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(haproxy, "-c", "-f", cfg)
			cmd.Env = tt.env
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("Configuration file is valid")) {
				t.Fatalf("haproxy -c: %v\n%s", err, out)
			}
		})
	}
}

// backend is a fake refcast node: /readyz answers 503 while draining, and
// /v1/events holds an SSE stream open, sending a heartbeat every 50ms.
type backend struct {
	id       int
	addr     string
	srv      *httptest.Server
	draining atomic.Bool
	streams  atomic.Int32 // open /v1/events streams
	// refuseWhileDraining makes /v1/events answer 503 while draining, as a
	// draining node does for new streams.
	refuseWhileDraining bool
}

func newBackends(t *testing.T, n int, refuse bool) []*backend {
	t.Helper()
	var bs []*backend
	for i := range n {
		b := &backend{id: i + 1, refuseWhileDraining: refuse}
		b.srv = httptest.NewServer(http.HandlerFunc(b.serveHTTP))
		b.addr = b.srv.Listener.Addr().String()
		t.Cleanup(func() {
			b.srv.CloseClientConnections()
			b.srv.Close()
		})
		bs = append(bs, b)
	}
	return bs
}

func (b *backend) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		io.WriteString(w, "ok\n")
	case "/readyz":
		if b.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	case "/v1/events":
		if b.refuseWhileDraining && b.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		b.streams.Add(1)
		defer b.streams.Add(-1)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no")
		fmt.Fprintf(w, "retry: 1000\n\nevent: hello\nid: c%d\ndata: {\"node\":%d}\n\n", b.id, b.id)
		w.(http.Flusher).Flush()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				if _, err := io.WriteString(w, ": hb\n\n"); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	default:
		http.NotFound(w, r)
	}
}

// stream is an SSE response read through a proxy.
type stream struct {
	node int
	resp *http.Response
	r    *bufio.Reader
}

// openStream opens /v1/events through the proxy and reads the hello frame,
// which must arrive while the backend still holds the stream open: a
// buffering proxy would sit on it.
func openStream(t *testing.T, base string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events?repo=**", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /v1/events: %s %s", resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q through the proxy", ct)
	}
	s := &stream{resp: resp, r: bufio.NewReader(resp.Body)}
	frame := s.frame(t, 3*time.Second)
	if !strings.Contains(frame, "retry: ") {
		t.Fatalf("first frame %q, want retry:", frame)
	}
	frame = s.frame(t, 3*time.Second)
	if _, err := fmt.Sscanf(frame[strings.Index(frame, "data: "):], "data: {\"node\":%d}", &s.node); err != nil {
		t.Fatalf("hello frame %q: %v", frame, err)
	}
	return s
}

// frame reads one SSE frame (up to a blank line) within d.
func (s *stream) frame(t *testing.T, d time.Duration) string {
	t.Helper()
	type result struct {
		frame string
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		var b strings.Builder
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				ch <- result{b.String(), err}
				return
			}
			if line == "\n" {
				ch <- result{b.String(), nil}
				return
			}
			b.WriteString(line)
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("read frame: %v (got %q)", r.err, r.frame)
		}
		return r.frame
	case <-time.After(d):
		s.resp.Body.Close()
		t.Fatalf("no SSE frame within %v: is the proxy buffering?", d)
		return ""
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProcess starts a proxy in the foreground and stops it at cleanup
// (before the backends close, since cleanups run last-in first-out).
func startProcess(t *testing.T, cmd *exec.Cmd) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so the cleanup also ends nginx's workers,
	// which outlive a killed master and hold the backends' connections.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out)
		}
	})
	return out
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// haproxyStatus reads the status (UP, DOWN, ...) of each server of the
// refcast_nodes backend from the stats page's CSV.
func haproxyStatus(statsBase string) map[string]string { return testnode.HAProxyStatus(statsBase) }

func allStatus(st map[string]string, n int, want string) bool {
	if len(st) != n {
		return false
	}
	for _, s := range st {
		if !strings.HasPrefix(s, want) {
			return false
		}
	}
	return true
}

// TestHAProxyLoopback runs deploy/haproxy.cfg unchanged in front of three
// fake nodes and checks what SSE needs from it: frames pass unbuffered,
// streams are spread by least connections, a node whose /readyz turns 503
// gets no new streams while the streams it holds stay open, and it gets
// traffic again once ready.
func TestHAProxyLoopback(t *testing.T) {
	haproxy := needTool(t, "haproxy", "/usr/sbin/haproxy")
	cfg, _ := filepath.Abs(filepath.Join(root, "deploy/haproxy.cfg"))
	bs := newBackends(t, 3, false)
	bind, statsBind := freeAddr(t), freeAddr(t)
	cmd := exec.Command(haproxy, "-db", "-f", cfg)
	cmd.Env = haproxyEnv(t, bs, bind, statsBind)
	startProcess(t, cmd)
	base, stats := "http://"+bind, "http://"+statsBind

	waitFor(t, 10*time.Second, "all servers UP", func() bool { return allStatus(haproxyStatus(stats), 3, "UP") })

	// leastconn: three held streams land on three different nodes.
	held := map[int]*stream{}
	for range 3 {
		s := openStream(t, base)
		held[s.node] = s
	}
	if len(held) != 3 {
		t.Fatalf("3 streams reached nodes %v, want one on each (balance leastconn)", held)
	}

	// Drain node 1: DOWN after the checks fail, no new streams, old one
	// still flowing.
	bs[0].draining.Store(true)
	waitFor(t, 10*time.Second, "refcast1 DOWN", func() bool { return strings.HasPrefix(haproxyStatus(stats)["refcast1"], "DOWN") })
	for range 4 {
		if s := openStream(t, base); s.node == 1 {
			t.Fatal("a new stream reached the draining node")
		}
	}
	if f := held[1].frame(t, 2*time.Second); !strings.Contains(f, ": hb") {
		t.Errorf("stream on the draining node: got %q, want heartbeats to keep flowing", f)
	}
	if bs[0].streams.Load() != 1 {
		t.Errorf("draining node holds %d streams, want its 1 to stay open", bs[0].streams.Load())
	}

	// Ready again: the emptiest node gets the next stream.
	bs[0].draining.Store(false)
	waitFor(t, 10*time.Second, "refcast1 UP", func() bool { return strings.HasPrefix(haproxyStatus(stats)["refcast1"], "UP") })
	if s := openStream(t, base); s.node != 1 {
		t.Errorf("next stream went to node %d, want node 1 (fewest connections)", s.node)
	}
}

// nginxConf writes deploy/nginx.conf into dir with the upstream servers, the
// listen address and the log directory pointed at the test's.
func nginxConf(t *testing.T, dir string, backends []*backend, listen string) string {
	t.Helper()
	conf := string(readFile(t, "deploy/nginx.conf"))
	re := regexp.MustCompile(`(?m)^(\s*server\s+)refcast(\d):8080`)
	if n := len(re.FindAllString(conf, -1)); n != len(backends) {
		t.Fatalf("nginx.conf has %d upstream servers refcastN:8080, want %d", n, len(backends))
	}
	conf = re.ReplaceAllStringFunc(conf, func(m string) string {
		sub := re.FindStringSubmatch(m)
		i := int(sub[2][0] - '1')
		return sub[1] + backends[i].addr
	})
	if !strings.Contains(conf, "listen 8080;") {
		t.Fatal("nginx.conf: no 'listen 8080;'")
	}
	conf = strings.Replace(conf, "listen 8080;", "listen "+listen+";", 1)
	conf = strings.ReplaceAll(conf, "/var/log/nginx/", dir+"/")
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// nginxArgs runs nginx with its prefix, error log and pid file in dir; the
// last argument is the -g directives, to which callers may add.
func nginxArgs(dir, conf string) []string {
	return []string{
		"-p", dir + "/", "-c", conf, "-e", filepath.Join(dir, "error.log"),
		"-g", "pid " + filepath.Join(dir, "nginx.pid") + ";",
	}
}

func TestNginxConfigValid(t *testing.T) {
	nginx := needTool(t, "nginx", "/usr/sbin/nginx")
	dir := t.TempDir()
	bs := []*backend{{addr: "127.0.0.1:18081"}, {addr: "127.0.0.1:18082"}, {addr: "127.0.0.1:18083"}}
	conf := nginxConf(t, dir, bs, "127.0.0.1:18080")
	out, err := exec.Command(nginx, append([]string{"-t"}, nginxArgs(dir, conf)...)...).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("test is successful")) {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	raw := string(readFile(t, "deploy/nginx.conf"))
	for _, want := range []string{"proxy_buffering off", "proxy_http_version 1.1", `proxy_set_header Connection ""`, "keepalive ", "least_conn", "zone ", "proxy_read_timeout 1h"} {
		if !strings.Contains(raw, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	if strings.Contains(raw, "X-Accel-Buffering") && regexp.MustCompile(`proxy_ignore_headers[^;]*X-Accel-Buffering`).MatchString(raw) {
		t.Error("nginx.conf ignores X-Accel-Buffering")
	}
}

// TestNginxLoopback runs deploy/nginx.conf in front of three fake nodes:
// frames pass unbuffered, and a draining node that refuses new streams with
// 503 is skipped (passive checks; open-source nginx has no active ones).
func TestNginxLoopback(t *testing.T) {
	nginx := needTool(t, "nginx", "/usr/sbin/nginx")
	dir := t.TempDir()
	bs := newBackends(t, 3, true)
	listen := freeAddr(t)
	conf := nginxConf(t, dir, bs, listen)
	args := nginxArgs(dir, conf)
	args[len(args)-1] += "daemon off;"
	startProcess(t, exec.Command(nginx, args...))
	base := "http://" + listen
	waitFor(t, 10*time.Second, "nginx listening", func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	seen := map[int]bool{}
	for range 3 {
		seen[openStream(t, base).node] = true
	}
	if len(seen) != 3 {
		t.Errorf("3 streams reached nodes %v, want one on each (least_conn)", seen)
	}
	bs[1].draining.Store(true)
	for range 6 {
		if s := openStream(t, base); s.node == 2 {
			t.Fatal("a new stream reached the draining node")
		}
	}
}
