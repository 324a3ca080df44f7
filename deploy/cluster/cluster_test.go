package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	iproc "github.com/refcast/refcast/internal/proc" // the type proc is this file's child process
	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// Settings of the tier. The drain window and retry hint are short so the
// test stays fast; the balancer checks every 200ms, so a draining node is
// marked DOWN after about 400ms (fall 2).
const (
	numNodes   = 3 // the server lines of deploy/haproxy.cfg
	numClients = 30
	drain      = 2 * time.Second
	retry      = 200 * time.Millisecond
	checkInter = "200ms"
	repoName   = "acme/app"
	query      = "/v1/events?repo=" + repoName + "&ref=refs/heads/*"
)

// The refs every push updates, so each push is two events sharing a push id.
var pushedRefs = []string{"refs/heads/main", "refs/heads/side"}

// TestCluster runs Redis, three nodes and HAProxy, connects clients through
// the balancer and pushes through the real hook.
//
// Phase 1: every client receives every event exactly once, in order, and
// the balancer spreads the clients over the three nodes.
//
// Phase 2: while pushes continue, one node is drained (SIGTERM) and
// another killed (SIGKILL). Their clients reconnect through the balancer
// with Last-Event-ID, all end up on the survivor, and every client still
// has every event exactly once, in publish order.
func TestCluster(t *testing.T) {
	testnode.Require(t, "git", "redis-server", "haproxy")
	start := time.Now()
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{AOF: true})

	var nodes []*node
	for i := range numNodes {
		nodes = append(nodes, startNode(t, bin, fmt.Sprintf("refcast%d", i+1), rs.URL()))
	}
	lb := startHAProxy(t, nodes)
	r := newRepo(t, bin, rs.URL())
	t.Logf("tier up in %v: redis %s, nodes %s, balancer %s", time.Since(start).Round(time.Millisecond), rs.URL(), addrs(nodes), lb.base)

	// Clients connect one after the other, each waiting for its hello, so
	// that leastconn spreads them evenly.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	hc := &http.Client{Transport: &http.Transport{
		DisableCompression:    true,
		MaxIdleConnsPerHost:   numClients,
		ResponseHeaderTimeout: 10 * time.Second,
	}}
	var clients []*client
	for i := range numClients {
		c := &client{id: i, url: lb.base + query, hc: hc}
		clients = append(clients, c)
		wg.Go(func() { c.run(ctx) })
		waitFor(t, 10*time.Second, func() string {
			if c.hellos() == 0 {
				return fmt.Sprintf("client %d: no hello through the balancer (%s)", i, c.summary())
			}
			return ""
		})
	}
	perNode := connections(t, nodes)
	t.Logf("%d clients connected through the balancer in %v; streams per node %v", numClients, time.Since(start).Round(time.Millisecond), perNode)
	for i, n := range perNode {
		if n < numClients/numNodes-2 {
			t.Errorf("node %s holds %d streams of %d, want about %d each (balance leastconn): %v", nodes[i].name, n, numClients, numClients/numNodes, perNode)
		}
	}

	// Phase 1: sequential pushes through the hook.
	p1 := time.Now()
	for range 8 {
		if err := r.push(); err != nil {
			t.Fatal(err)
		}
	}
	waitDelivered(t, clients, r, 20*time.Second)
	checkAll(t, clients, r, "phase 1")
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("phase 1: %d pushes (%d events) reached all %d clients exactly once, in order, in %v",
		len(r.pushes()), len(r.pushes())*len(pushedRefs), numClients, time.Since(p1).Round(time.Millisecond))

	// Phase 2: pushes continue while one node drains and another dies.
	p2 := time.Now()
	drained, killed, survivor := nodes[0], nodes[1], nodes[2]
	stopPush, pushErr := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopPush:
				pushErr <- nil
				return
			default:
			}
			if err := r.push(); err != nil {
				pushErr <- err
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var stopOnce sync.Once
	stopPushing := func() (err error) {
		stopOnce.Do(func() { close(stopPush); err = <-pushErr })
		return err
	}
	t.Cleanup(func() { _ = stopPushing() })

	time.Sleep(500 * time.Millisecond)
	t.Logf("phase 2: SIGTERM %s (%d streams, --drain %v), then SIGKILL %s (%d streams), pushes continuing",
		drained.name, perNode[0], drain, killed.name, perNode[1])
	termAt := time.Now()
	drained.signal(t, syscall.SIGTERM)
	time.Sleep(700 * time.Millisecond)
	killAt := time.Now()
	killed.signal(t, syscall.SIGKILL)

	// Every client ends up on the survivor; the drained node closes its
	// streams within the window and exits cleanly (the server allows itself
	// drain+5s, plus up to the Redis XREAD block to close the bus).
	waitFor(t, 15*time.Second, func() string {
		if n := metric(survivor, "refcast_connections"); n != numClients {
			return fmt.Sprintf("survivor %s holds %v streams, want all %d (%s)", survivor.name, n, numClients, streamingSummary(clients))
		}
		return ""
	})
	settled := time.Since(termAt)
	if err := drained.wait(drain + 10*time.Second); err != nil {
		t.Errorf("drained node %s: %v", drained.name, err)
	}
	exitAfter := time.Since(termAt)
	time.Sleep(time.Second) // a few more pushes with everyone on the survivor
	if err := stopPushing(); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, clients, r, 20*time.Second)
	checkAll(t, clients, r, "phase 2")
	if n := metric(survivor, "refcast_resets_total"); n != 0 {
		t.Errorf("survivor counted %v resets, want 0: every cursor is within the history", n)
	}

	// Every stream of the drained node ended after a jittered retry: hint
	// (Retry plus up to 100%); the killed node's ended without one.
	drainedEnds, abruptEnds := endsSince(clients, termAt)
	if len(drainedEnds) != perNode[0] {
		t.Errorf("%d streams ended after a retry: hint, want the %d of the drained node %s: %v", len(drainedEnds), perNode[0], drained.name, drainedEnds)
	}
	var offsets []time.Duration
	for _, e := range drainedEnds {
		offsets = append(offsets, e.at.Sub(termAt).Round(time.Millisecond))
		if e.hint < retry || e.hint > 2*retry {
			t.Errorf("drained stream told retry: %v, want between %v and %v", e.hint, retry, 2*retry)
		}
	}
	if len(abruptEnds) < perNode[1] {
		t.Errorf("%d streams ended abruptly, want at least the %d of the killed node %s: %v", len(abruptEnds), perNode[1], killed.name, abruptEnds)
	}
	for _, e := range abruptEnds {
		if e.at.Before(killAt) {
			t.Errorf("a stream ended without a retry: hint before any node was killed: %v", e)
		}
	}

	st := lb.status()
	for _, n := range []*node{drained, killed} {
		if !strings.HasPrefix(st[n.name], "DOWN") {
			t.Errorf("balancer shows %s as %q, want DOWN", n.name, st[n.name])
		}
	}
	if !strings.HasPrefix(st[survivor.name], "UP") {
		t.Errorf("balancer shows survivor %s as %q, want UP", survivor.name, st[survivor.name])
	}

	// What the clients went through, for the log.
	var refused []string
	for _, c := range clients {
		c.mu.Lock()
		for _, s := range c.refused {
			refused = append(refused, fmt.Sprintf("client %d: %s", c.id, s))
		}
		c.mu.Unlock()
	}
	t.Logf("%s: its %d streams ended at %v after SIGTERM (each after a retry: hint); it exited after %v",
		drained.name, len(drainedEnds), offsets, exitAfter.Round(time.Millisecond))
	t.Logf("%s: %d streams ended abruptly (its own, and streams that had moved to it from %s)", killed.name, len(abruptEnds), drained.name)
	t.Logf("all %d clients on %s %v after SIGTERM", numClients, survivor.name, settled.Round(time.Millisecond))
	t.Logf("phase 2: %d pushes in all (%d events) reached all %d clients exactly once, in order, no reset; %d reconnect attempts refused; %v",
		len(r.pushes()), len(r.pushes())*len(pushedRefs), numClients, len(refused), time.Since(p2).Round(time.Millisecond))
	if len(refused) > 0 {
		// A browser's EventSource does not retry after a non-200 answer: it
		// closes for good, and only a page that reconnects by itself (like
		// the dashboard) comes back.
		t.Logf("refused reconnect attempts, retried after the retry: hint (an EventSource would give up on these):\n  %s", strings.Join(refused, "\n  "))
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// node is a running `refcast serve` process.
type node struct {
	name string
	addr string
	*proc
}

func startNode(t *testing.T, bin, name, redisURL string) *node {
	t.Helper()
	addr := testnode.FreeAddr(t)
	cmd := exec.Command(bin, "serve", "--listen", addr, "--redis", redisURL,
		"--drain", drain.String(), "--heartbeat", "500ms", "--retry", retry.String())
	n := &node{name: name, addr: addr, proc: startProc(t, name, cmd)}
	waitFor(t, 30*time.Second, func() string {
		if err := n.exited(); err != nil {
			t.Fatalf("%s exited at start: %v\n%s", name, err, n.out)
		}
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return fmt.Sprintf("%s not ready: %v", name, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Sprintf("%s not ready: /readyz %s", name, res.Status)
		}
		return ""
	})
	return n
}

func addrs(nodes []*node) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.name+"="+n.addr)
	}
	return strings.Join(s, " ")
}

// balancer is HAProxy running deploy/haproxy.cfg.
type balancer struct {
	base  string // the frontend, http://127.0.0.1:PORT
	stats string // the stats frontend
}

// startHAProxy runs deploy/haproxy.cfg unchanged, its addresses and check
// interval set through the environment variables it reads, and waits until
// it sees every node UP.
func startHAProxy(t *testing.T, nodes []*node) *balancer {
	t.Helper()
	cfg, err := filepath.Abs(filepath.Join("..", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	servers := regexp.MustCompile(`(?m)^\s*server\s+(\S+)\s+"\$\{(\w+)-`).FindAllStringSubmatch(string(raw), -1)
	if len(servers) != len(nodes) {
		t.Fatalf("deploy/haproxy.cfg has %d server lines of the form server NAME \"${VAR-default}\", the test runs %d nodes", len(servers), len(nodes))
	}
	bind, statsBind := testnode.FreeAddr(t), testnode.FreeAddr(t)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"REFCAST_LB_BIND=" + bind,
		"REFCAST_LB_STATS_BIND=" + statsBind,
		"REFCAST_CHECK_INTER=" + checkInter,
	}
	for i, m := range servers {
		if m[1] != nodes[i].name {
			t.Fatalf("deploy/haproxy.cfg server %d is %s, want %s", i+1, m[1], nodes[i].name)
		}
		env = append(env, m[2]+"="+nodes[i].addr)
	}
	cmd := exec.Command("haproxy", "-db", "-f", cfg)
	cmd.Env = env
	p := startProc(t, "haproxy", cmd)
	lb := &balancer{base: "http://" + bind, stats: "http://" + statsBind}
	waitFor(t, 15*time.Second, func() string {
		if err := p.exited(); err != nil {
			t.Fatalf("haproxy exited at start: %v\n%s", err, p.out)
		}
		st := lb.status()
		for _, n := range nodes {
			if !strings.HasPrefix(st[n.name], "UP") {
				return fmt.Sprintf("haproxy does not see every node UP: %v", st)
			}
		}
		return ""
	})
	return lb
}

// status reads each refcast_nodes server's status (UP, DOWN, ...) from the
// stats page's CSV; nil when it cannot.
func (b *balancer) status() map[string]string { return testnode.HAProxyStatus(b.stats) }

// metric reads an unlabelled gauge or counter from a node's /metrics; -1
// when the node does not answer.
func metric(n *node, name string) float64 {
	res, err := http.Get("http://" + n.addr + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	return -1
}

func connections(t *testing.T, nodes []*node) []int {
	t.Helper()
	var out []int
	for _, n := range nodes {
		out = append(out, int(metric(n, "refcast_connections")))
	}
	return out
}

// proc is a child process whose output is kept for failure messages.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // set before done is closed
}

func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	iproc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output (last 8 KiB):\n%s", name, p.out.tail(8<<10))
		}
	})
	return p
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}

// exited returns the exit error once the process has ended, else nil.
func (p *proc) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			return errors.New("exited with status 0")
		}
		return p.err
	default:
		return nil
	}
}

// wait waits up to d for the process to end and returns why it failed, or
// nil for a clean exit.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("exited: %w", p.err)
		}
		return nil
	case <-time.After(d):
		return fmt.Errorf("still running %v after being asked to stop", d)
	}
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.b) > n {
		return "…" + string(s.b[len(s.b)-n:])
	}
	return string(s.b)
}

func (s *syncBuffer) String() string { return s.tail(1 << 30) }

// repo is a bare repository whose refcast hook publishes straight to
// Redis, and a clone that pushes to it.
type repo struct {
	work string
	env  []string

	mu   sync.Mutex
	shas []string // commit pushed by each push, in push order; guarded by mu
}

func newRepo(t *testing.T, bin, redisURL string) *repo {
	t.Helper()
	dir := t.TempDir()
	bare := filepath.Join(dir, "app.git")
	testnode.Git(t, dir, nil, "init", "-q", "--bare", "-b", "main", bare)
	if out, err := exec.Command(bin, "install-hook", bare, "--redis", redisURL, "--repo", repoName).CombinedOutput(); err != nil {
		t.Fatalf("install-hook: %v\n%s", err, out)
	}
	work := filepath.Join(dir, "work")
	testnode.Git(t, dir, nil, "clone", "-q", bare, work)
	return &repo{work: work, env: testnode.GitEnv(t)}
}

// push commits and pushes it to every ref of pushedRefs in one push. Safe
// to call from any goroutine, one at a time.
func (r *repo) push() error {
	n := len(r.pushes())
	var refspecs []string
	for _, ref := range pushedRefs {
		refspecs = append(refspecs, "HEAD:"+ref)
	}
	for _, args := range [][]string{
		{"commit", "-q", "--allow-empty", "-m", fmt.Sprintf("push %d", n)},
		append([]string{"push", "-q", "origin"}, refspecs...),
	} {
		if _, err := r.git(args...); err != nil {
			return err
		}
	}
	sha, err := r.git("rev-parse", "HEAD")
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.shas = append(r.shas, sha)
	r.mu.Unlock()
	return nil
}

func (r *repo) git(args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = r.work, r.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// pushes returns the commits pushed so far, in push order.
func (r *repo) pushes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.shas)
}

// event is what a client records of one ref frame.
type event struct {
	Push string `json:"push"`
	Repo string `json:"repo"`
	Ref  string `json:"ref"`
	New  string `json:"new"`
	id   string
	conn int // which of the client's connections delivered it
}

// client is an SSE client that reconnects like EventSource: after a stream
// ends it waits the server's retry: hint and reconnects with Last-Event-ID
// set to the last id it saw. Unlike EventSource it also retries after a
// refused attempt (non-200 or a connection error), and records it.
type client struct {
	id  int    // set at construction
	url string // set at construction
	hc  *http.Client

	mu        sync.Mutex
	events    []event // guarded by mu
	lastID    string  // guarded by mu
	retry     time.Duration
	conns     int         // streams that answered 200; guarded by mu
	streaming bool        // a stream is open; guarded by mu
	ends      []streamEnd // guarded by mu
	refused   []string    // attempts that got no stream; guarded by mu
	resets    []string    // reset frames (there must be none); guarded by mu
	bad       []string    // malformed frames; guarded by mu
	hello     int         // hello frames; guarded by mu
}

func (c *client) run(ctx context.Context) {
	c.mu.Lock()
	c.retry = retry
	c.mu.Unlock()
	for ctx.Err() == nil {
		c.stream(ctx)
		c.mu.Lock()
		d := c.retry
		c.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
}

// stream opens one connection and reads it to its end.
func (c *client) stream(ctx context.Context) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	c.mu.Lock()
	if c.lastID != "" {
		req.Header.Set("Last-Event-ID", c.lastID)
	}
	c.mu.Unlock()
	res, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			c.note(&c.refused, err.Error())
		}
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		c.note(&c.refused, fmt.Sprintf("%s %s", res.Status, strings.TrimSpace(string(body))))
		return
	}
	c.mu.Lock()
	c.conns++
	conn := c.conns
	c.streaming = true
	c.mu.Unlock()

	br := bufio.NewReader(res.Body)
	var id, name, data string
	var hasID bool
	var retries int        // retry: lines in this stream
	var hint time.Duration // the last one after the opening one
	var frames int         // frames with a field, dispatched in this stream
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			// An incomplete frame at the end is discarded, as EventSource does.
			c.mu.Lock()
			c.streaming = false
			if ctx.Err() == nil {
				// Only the opening retry: and no frame: a draining node
				// bounced the request (it answers 200 and ends instead of
				// 503, on which an EventSource would give up).
				bounced := retries == 1 && frames == 0
				c.ends = append(c.ends, streamEnd{at: time.Now(), stream: conn, hint: hint, bounced: bounced, err: err})
			}
			c.mu.Unlock()
			return
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if name != "" || data != "" || hasID {
				frames++
			}
			c.dispatch(conn, name, data, id, hasID)
			id, name, data, hasID = "", "", "", false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // comment: heartbeat
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id, hasID = value, true
		case "event":
			name = value
		case "data":
			if data != "" {
				data += "\n"
			}
			data += value
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil {
				if retries++; retries > 1 {
					hint = time.Duration(ms) * time.Millisecond
				}
				c.mu.Lock()
				c.retry = time.Duration(ms) * time.Millisecond
				c.mu.Unlock()
			}
		}
	}
}

func (c *client) dispatch(conn int, name, data, id string, hasID bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hasID {
		c.lastID = id
	}
	switch name {
	case "hello":
		c.hello++
	case "ref":
		var ev event
		if err := json.Unmarshal([]byte(data), &ev); err != nil || ev.Repo != repoName || !hasID {
			c.bad = append(c.bad, fmt.Sprintf("stream %d: ref frame id=%q data=%q: %v", conn, id, data, err))
			return
		}
		ev.id, ev.conn = id, conn
		c.events = append(c.events, ev)
	case "reset":
		c.resets = append(c.resets, fmt.Sprintf("stream %d: %s", conn, data))
	case "", "message":
		if data != "" {
			c.bad = append(c.bad, fmt.Sprintf("stream %d: unnamed frame %q", conn, data))
		}
	default:
		c.bad = append(c.bad, fmt.Sprintf("stream %d: unexpected %s frame %q", conn, name, data))
	}
}

// streamEnd is how one of a client's streams ended.
type streamEnd struct {
	at      time.Time
	stream  int
	hint    time.Duration // the retry: sent just before the end (a drain); 0 if none
	bounced bool          // a draining node answered with only a retry: hint
	err     error         // io.EOF for a clean end
}

func (e streamEnd) String() string {
	how := "abruptly"
	if e.bounced {
		how = "bounced by a draining node"
	}
	if e.hint > 0 {
		how = fmt.Sprintf("after retry: %v", e.hint)
	}
	return fmt.Sprintf("%s stream %d ended %s (%v)", e.at.Format("15:04:05.000"), e.stream, how, e.err)
}

func (c *client) note(list *[]string, s string) {
	c.mu.Lock()
	*list = append(*list, time.Now().Format("15:04:05.000")+" "+s)
	c.mu.Unlock()
}

func (c *client) hellos() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hello
}

func (c *client) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d events, %d streams, streaming=%v, ends %v, refused %v", len(c.events), c.conns, c.streaming, c.ends, c.refused)
}

// endsSince returns the ends of streams after from, drained ones (told a
// retry: just before the end) and abrupt ones apart.
func endsSince(clients []*client, from time.Time) (drained, abrupt []streamEnd) {
	for _, c := range clients {
		c.mu.Lock()
		for _, e := range c.ends {
			switch {
			case e.at.Before(from), e.bounced:
			case e.hint > 0:
				drained = append(drained, e)
			default:
				abrupt = append(abrupt, e)
			}
		}
		c.mu.Unlock()
	}
	slices.SortFunc(drained, func(a, b streamEnd) int { return a.at.Compare(b.at) })
	return drained, abrupt
}

func streamingSummary(clients []*client) string {
	var off []string
	for _, c := range clients {
		c.mu.Lock()
		if !c.streaming {
			off = append(off, fmt.Sprintf("client %d not streaming (refused %v)", c.id, c.refused))
		}
		c.mu.Unlock()
	}
	if len(off) == 0 {
		return "every client is streaming"
	}
	return strings.Join(off, "; ")
}

// waitDelivered waits until every client holds an event for every ref of
// every push so far (or d passes; checkAll then says what is missing).
func waitDelivered(t *testing.T, clients []*client, r *repo, d time.Duration) {
	t.Helper()
	want := map[string]bool{}
	for _, sha := range r.pushes() {
		want[sha] = true
	}
	deadline := time.Now().Add(d)
	for _, c := range clients {
		for {
			c.mu.Lock()
			have := map[[2]string]bool{}
			for _, ev := range c.events {
				if want[ev.New] {
					have[[2]string{ev.New, ev.Ref}] = true
				}
			}
			c.mu.Unlock()
			if len(have) == len(want)*len(pushedRefs) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// checkAll checks that every client holds exactly the pushed events, each
// once, pushes in push order, and that all clients agree on one order and
// on the push ids.
func checkAll(t *testing.T, clients []*client, r *repo, phase string) {
	t.Helper()
	shas := r.pushes()
	index := map[string]int{}
	for i, sha := range shas {
		index[sha] = i
	}
	pushID := map[int]string{} // push index → push id, as first seen
	var canon []event
	canonFrom := -1
	failed := 0
	for _, c := range clients {
		c.mu.Lock()
		evs := slices.Clone(c.events)
		problems := slices.Clone(c.bad)
		for _, s := range c.resets {
			problems = append(problems, "reset (the node could not replay): "+s)
		}
		info := fmt.Sprintf("%d streams; ends %v; refused %v", c.conns, c.ends, c.refused)
		c.mu.Unlock()

		seen := map[[2]string]int{}
		last := -1
		for pos, ev := range evs {
			i, ok := index[ev.New]
			if !ok {
				problems = append(problems, fmt.Sprintf("#%d (stream %d): event for unknown commit %s on %s", pos, ev.conn, ev.New, ev.Ref))
				continue
			}
			k := [2]string{ev.New, ev.Ref}
			if prev, dup := seen[k]; dup {
				problems = append(problems, fmt.Sprintf("#%d (stream %d): duplicate of #%d: push %d %s (id %s)", pos, ev.conn, prev, i, ev.Ref, ev.id))
				continue
			}
			seen[k] = pos
			if i < last {
				problems = append(problems, fmt.Sprintf("#%d (stream %d): push %d %s after push %d: out of order", pos, ev.conn, i, ev.Ref, last))
			}
			last = max(last, i)
			if ev.Push == "" {
				problems = append(problems, fmt.Sprintf("#%d: push %d %s without a push id", pos, i, ev.Ref))
			} else if id, ok := pushID[i]; !ok {
				pushID[i] = ev.Push
			} else if id != ev.Push {
				problems = append(problems, fmt.Sprintf("#%d: push %d %s has push id %q, elsewhere %q", pos, i, ev.Ref, ev.Push, id))
			}
		}
		var missing []string
		for i, sha := range shas {
			for _, ref := range pushedRefs {
				if _, ok := seen[[2]string{sha, ref}]; !ok {
					missing = append(missing, fmt.Sprintf("push %d %s", i, ref))
				}
			}
		}
		if len(missing) > 0 {
			problems = slices.Insert(problems, 0, fmt.Sprintf("missed %d of %d events: %s", len(missing), len(shas)*len(pushedRefs), strings.Join(missing, ", ")))
		}
		if len(problems) == 0 {
			if canon == nil {
				canon, canonFrom = evs, c.id
			} else if !sameOrder(canon, evs) {
				problems = append(problems, fmt.Sprintf("events in another order than client %d: %s vs %s", canonFrom, order(evs, index), order(canon, index)))
			}
		}
		if len(problems) > 0 {
			failed++
			if len(problems) > 12 {
				problems = append(problems[:12], fmt.Sprintf("… and %d more", len(problems)-12))
			}
			if failed <= 5 {
				t.Errorf("%s: client %d (%d events, %s):\n  %s", phase, c.id, len(evs), info, strings.Join(problems, "\n  "))
			}
		}
	}
	if failed > 5 {
		t.Errorf("%s: %d clients of %d failed (first 5 shown)", phase, failed, len(clients))
	}
	ids := map[string]int{}
	for i, id := range pushID {
		if j, dup := ids[id]; dup {
			t.Errorf("%s: pushes %d and %d share push id %q", phase, i, j, id)
		}
		ids[id] = i
	}
}

func sameOrder(a, b []event) bool {
	return slices.EqualFunc(a, b, func(x, y event) bool { return x.New == y.New && x.Ref == y.Ref })
}

func order(evs []event, index map[string]int) string {
	var s []string
	for _, ev := range evs {
		s = append(s, fmt.Sprintf("%d:%s", index[ev.New], strings.TrimPrefix(ev.Ref, "refs/heads/")))
	}
	return strings.Join(s, " ")
}

// waitFor polls cond until it returns "" or d passes, then fails with its
// last answer.
func waitFor(t *testing.T, d time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, msg)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
