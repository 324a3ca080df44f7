package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/wire"
)

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) { o.MaxConnections = 2 })
	q := query("repo", "acme/app")
	a := n.subscribe(t, q, nil)
	_, hello := a.opening()
	n.subscribe(t, q, nil).opening()
	for _, path := range []string{"/v1/events?" + q, "/v1/refs?" + q + "&" + query("wait", "1s", "since", hello.ID)} {
		st, h, body := n.get(t, path, nil)
		if st != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
			t.Fatalf("%s beyond MaxConnections: %d Retry-After %q %s", path, st, h.Get("Retry-After"), body)
		}
		apiErrorBody(t, 503, body)
	}
	if got := n.metric(t, "refcast_rejected_total", "limit", "node_limit"); got != 2 {
		t.Errorf("refcast_rejected_total{limit=node_limit} = %v, want 2", got)
	}
	// A snapshot without wait= is not a connection and is served.
	if st, _, _ := n.get(t, "/v1/refs?"+q, nil); st != 200 {
		t.Fatalf("snapshot at the limit: %d", st)
	}
	// Once one leaves, a new stream is accepted (the node notices the
	// closed socket on its next write).
	a.close()
	i := 0
	eventually(t, 5*time.Second, "the closed stream to be dropped", func() bool {
		i++
		n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(i))))
		time.Sleep(10 * time.Millisecond)
		return n.metric(t, "refcast_connections") == 1
	})
	n.subscribe(t, q, nil).opening()
}

// bigPush is a push of count updates with 1000-byte subjects and authors,
// so frames are about 2.3 KB: refs refs/heads/b<first>… moving from old(i) to new(i).
func bigPush(repo string, first, count int, old, new func(i int) string) *bus.Push {
	subject := strings.Repeat("x", 1000)
	p := newPush(repo)
	for i := first; i < first+count; i++ {
		p.Updates = append(p.Updates, bus.RefUpdate{
			Ref: fmt.Sprintf("refs/heads/b%d", i), Old: old(i), New: new(i),
			Commit: &bus.Commit{Subject: subject, Author: subject},
		})
	}
	return p
}

// dialStalled opens a stream and does not read it. (A tiny SO_RCVBUF
// would stall it sooner, but loopback TCP then crawls once it reads.)
func (n *testNode) dialStalled(t *testing.T, q string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", n.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET /v1/events?%s HTTP/1.1\r\nHost: x\r\n\r\n", q); err != nil {
		t.Fatal(err)
	}
	return conn
}

// collector reads a stream on its own goroutine and records the events.
type collector struct {
	mu     sync.Mutex
	evs    []bus.Event
	ids    []string
	err    error
	done   chan struct{}
	hellos int
}

func collect(s *sseStream) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			f, err := s.next(20 * time.Second)
			if err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				return
			}
			c.mu.Lock()
			switch f.Event {
			case "hello":
				c.hellos++
			case "ref", "sync":
				var ev bus.Event
				if err := json.Unmarshal([]byte(f.Data), &ev); err != nil {
					c.err = err
					c.mu.Unlock()
					return
				}
				c.evs = append(c.evs, ev)
				c.ids = append(c.ids, f.ID)
			}
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.evs)
}

// TestSlowClientEvicted: a client that never reads is evicted while a
// well-behaved one on the same node receives every event.
func TestSlowClientEvicted(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) {
		o.MaxQueue = 1024 // more than one push: see TestBurstLargerThanQueue
		o.WriteTimeout = 3 * time.Second
	})
	q := query("repo", "acme/app")
	good := n.subscribe(t, q, nil)
	good.opening()
	c := collect(good)
	n.dialStalled(t, q)
	eventually(t, 5*time.Second, "both streams", func() bool { return n.metric(t, "refcast_connections") == 2 })

	const pushes, per = 16, 500
	zero := func(int) string { return z }
	for p := range pushes {
		n.publish(t, bigPush("acme/app", p*per, per, zero, func(i int) string { return oid(i + 1) }))
		// Well-behaved: it keeps up with the publisher.
		eventually(t, 5*time.Second, "the good client to keep up", func() bool { return c.count() >= (p+1)*per })
	}
	eventually(t, 10*time.Second, "the slow client's eviction", func() bool {
		return n.metric(t, "refcast_evictions_total") >= 1
	})
	t.Logf("evictions: queue_full=%v slow_client=%v; stalls=%v",
		n.metric(t, "refcast_evictions_total", "reason", "queue_full"),
		n.metric(t, "refcast_evictions_total", "reason", "slow_client"),
		n.metric(t, "refcast_stream_stalls_total"))
	eventually(t, 15*time.Second, "the good client to receive everything", func() bool { return c.count() >= pushes*per })

	// And it stays prompt: a fresh event arrives quickly.
	start := time.Now()
	n.publish(t, newPush("acme/app", upd("refs/heads/sentinel", z, oid(1))))
	eventually(t, 2*time.Second, "the sentinel", func() bool { return c.count() == pushes*per+1 })
	t.Logf("sentinel latency after the eviction: %v", time.Since(start))

	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ev := range c.evs[:pushes*per] {
		if want := fmt.Sprintf("refs/heads/b%d", i); ev.Ref != want {
			t.Fatalf("good client event %d is %s, want %s", i, ev.Ref, want)
		}
	}
	if c.err != nil {
		t.Fatalf("good client: %v", c.err)
	}
	if got := n.metric(t, "refcast_connections"); got != 1 {
		t.Errorf("refcast_connections = %v after the eviction, want 1", got)
	}
}

// TestLatestModeCoalesces: a mode=latest client that does not read is not
// evicted; its queue folds by ref, and when it reads it gets the newest
// state of every ref.
func TestLatestModeCoalesces(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) {
		o.MaxQueue = 16
		o.WriteTimeout = time.Hour // about queues, never evicted for slowness (publishing can take 20 s under load)
		// 120 publishes from one address: past the default burst (100),
		// they passed only while publishing was slower than 50/s refilled.
		o.PublishRate = -1
	})
	q := query("repo", "acme/app", "mode", "latest")
	conn := n.dialStalled(t, q)
	eventually(t, 5*time.Second, "the stream", func() bool { return n.metric(t, "refcast_connections") == 1 })

	const refs, rounds = 40, 120
	for r := range rounds {
		old := func(i int) string {
			if r == 0 {
				return z
			}
			return oid(r*1000 + i)
		}
		n.publish(t, bigPush("acme/app", 0, refs, old, func(i int) string { return oid((r+1)*1000 + i) }))
	}
	eventually(t, 10*time.Second, "coalescing", func() bool { return n.metric(t, "refcast_coalesced_total") > 0 })
	if ev := n.metric(t, "refcast_evictions_total"); ev != 0 {
		t.Fatalf("mode=latest client evicted (%v)", ev)
	}

	s := startSSEOnConn(t, conn, q)
	s.opening()
	latest := map[string]string{}
	var lastCursor wire.Cursor
	deadline := time.Now().Add(patience)
	frames := 0
	for len(latest) < refs || !allFinal(latest, rounds) {
		if time.Now().After(deadline) {
			t.Fatalf("after %d frames the client holds %d refs, not all final", frames, len(latest))
		}
		f := s.nextNonHB(time.Until(deadline))
		frames++
		ev := decodeEvent(t, f)
		if prev, ok := latest[ev.Ref]; ok && prev != ev.Old {
			t.Fatalf("event for %s has old %s, client holds %s (a lost update)", ev.Ref, ev.Old[36:], prev[36:])
		}
		latest[ev.Ref] = ev.New
		c, _ := wire.DecodeCursor(f.ID)
		if lastCursor.Seqs != nil && !wire.AtLeast(c.Seqs, lastCursor.Seqs) {
			t.Fatalf("frame %d: cursor went backwards", frames)
		}
		lastCursor = c
	}
	t.Logf("%d events published, %d frames received, coalesced %v", refs*rounds, frames, n.metric(t, "refcast_coalesced_total"))
	if ev := n.metric(t, "refcast_evictions_total"); ev != 0 {
		t.Fatalf("mode=latest client evicted (%v)", ev)
	}
}

func allFinal(latest map[string]string, rounds int) bool {
	for ref, id := range latest {
		var i int
		fmt.Sscanf(ref, "refs/heads/b%d", &i)
		if id != oid(rounds*1000+i) {
			return false
		}
	}
	return true
}

// startSSEOnConn reads the response head of a request already sent on conn.
func startSSEOnConn(t *testing.T, conn net.Conn, q string) *sseStream {
	t.Helper()
	s := &sseStream{t: t, conn: conn}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(conn, 64<<10)
	req, _ := http.NewRequest(http.MethodGet, "/v1/events?"+q, nil)
	resp, err := http.ReadResponse(br, req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response head: %v %v", resp, err)
	}
	s.resp = resp
	s.r = bufio.NewReaderSize(resp.Body, 64<<10)
	return s
}

// TestHTTP2 streams over cleartext HTTP/2 (h2c), the handler path.
func TestHTTP2(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) { o.Heartbeat = 100 * time.Millisecond })
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.url+"/v1/events?"+query("repo", "acme/app"), nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s %d %q", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	frames := make(chan sseFrame, 100)
	go func() {
		defer close(frames)
		r := bufio.NewReader(resp.Body)
		for {
			f, err := readFrame(r)
			if err != nil {
				return
			}
			frames <- f
		}
	}()
	next := func() sseFrame {
		t.Helper()
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatal("stream ended")
			}
			return f
		case <-time.After(5 * time.Second):
			t.Fatal("no frame within 5s")
		}
		return sseFrame{}
	}
	if f := next(); f.Retry == "" {
		t.Fatalf("first frame %+v", f)
	}
	if f := next(); f.Event != "hello" {
		t.Fatalf("second frame %+v", f)
	}
	if f := next(); f.Comment != "hb" {
		t.Fatalf("idle h2 stream: %+v, want a heartbeat", f)
	}
	want := publishN(t, n, "acme/app", "refs/heads/main", 0, 3, "acme/lib")
	var got []bus.Event
	for len(got) < 3 {
		if f := next(); f.Event == "ref" {
			got = append(got, decodeEvent(t, f))
		}
	}
	if !slices.Equal(refsOf(got), want) {
		t.Fatalf("h2 events %q, want %q", refsOf(got), want)
	}
	cancel()
	eventually(t, 5*time.Second, "the h2 stream to unregister", func() bool { return n.metric(t, "refcast_connections") == 0 })
}

// TestDrain: on shutdown, streams are closed spread over the drain
// window, each told retry: first, and /readyz reports 503 meanwhile.
func TestDrain(t *testing.T) {
	t.Parallel()
	const clients, window = 10, 500 * time.Millisecond
	n := startNode(t, newBus(t, memory.Options{}), window, nil)
	if st, _, body := n.get(t, "/readyz", nil); st != 200 {
		t.Fatalf("/readyz before drain: %d %s", st, body)
	}
	type end struct {
		at    time.Time
		last  sseFrame
		err   error
		count int
	}
	ends := make(chan end, clients)
	for range clients {
		s := n.subscribe(t, query("repo", "acme/app"), nil)
		s.opening()
		go func() {
			var e end
			for {
				f, err := s.next(10 * time.Second)
				if err != nil {
					e.at, e.err = time.Now(), err
					ends <- e
					return
				}
				e.last = f
				e.count++
			}
		}()
	}
	start := time.Now()
	stopped := make(chan time.Duration, 1)
	go func() { stopped <- n.stop() }()
	// /readyz is asked until it says draining or the node stops
	// answering; the streams stay open past the first close, so the node
	// answers for at least one close interval after the drain began.
	sawNotReady := false
	for !sawNotReady {
		res, err := http.Get(n.url + "/readyz")
		if err != nil {
			break // the node has shut down
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		sawNotReady = res.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "draining")
		time.Sleep(5 * time.Millisecond)
	}
	if !sawNotReady {
		t.Error("/readyz never answered 503 draining during the drain")
	}
	var first, last time.Time
	for range clients {
		e := <-ends
		if !errors.Is(e.err, io.EOF) && !errors.Is(e.err, io.ErrUnexpectedEOF) {
			t.Errorf("stream ended with %v, want EOF", e.err)
		}
		if e.last.Retry == "" || e.count != 1 {
			t.Errorf("before close: %d frames, last %+v; want just a retry:", e.count, e.last)
		}
		if first.IsZero() || e.at.Before(first) {
			first = e.at
		}
		if e.at.After(last) {
			last = e.at
		}
	}
	spread := last.Sub(first)
	t.Logf("closes spread over %v (window %v); Serve returned after %v", spread, window, <-stopped)
	// Only a lower bound: the closes follow a ticker of window/clients, so
	// the last comes at least clients-1 ticks after the first however
	// loaded the machine is; load can only stretch the spread.
	if spread < window/3 {
		t.Fatalf("closes spread over %v, from %v after shutdown: want spread over the %v window", spread, first.Sub(start), window)
	}
}

// TestDrainStalledClient: a client whose socket was full when the drain
// began gets its retry: and is closed once it catches up, not left open
// until the shutdown deadline.
func TestDrainStalledClient(t *testing.T) {
	t.Parallel()
	const window = 200 * time.Millisecond
	n := startNode(t, newBus(t, memory.Options{}), window, func(o *Options) {
		o.MaxQueue = 100000
		// Never evicted for being slow: on a loaded machine publishing
		// the backlog has taken longer than 20 s, and the eviction then
		// raced the drain this test is about.
		o.WriteTimeout = time.Hour
		// Nor for memory: its 8,000 events of 4.6 KB exceed the default.
		o.MaxQueuedBytes = 1 << 30
	})
	q := query("repo", "acme/app")
	conn := n.dialStalled(t, q)
	eventually(t, 5*time.Second, "the stream", func() bool { return n.metric(t, "refcast_connections") == 1 })
	zero := func(int) string { return z }
	const pushes, per = 8, 1000
	for p := range pushes {
		n.publish(t, bigPush("acme/app", p*per, per, zero, func(i int) string { return oid(i + 1) }))
	}
	eventually(t, 5*time.Second, "a stall", func() bool { return n.metric(t, "refcast_stream_stalls_total") > 0 })
	start := time.Now()
	stopped := make(chan time.Duration, 1)
	go func() { stopped <- n.stop() }()
	time.Sleep(2 * window) // the drain queues its retry: behind the backlog
	s := startSSEOnConn(t, conn, q)
	s.opening()
	events, retries := 0, 0
	var lastID string
	for {
		f, err := s.next(10 * time.Second)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after %d events: %v", events, err)
			}
			break
		}
		switch {
		case f.Event == "ref":
			events++
			lastID = f.ID
		case f.Retry != "":
			retries++
		}
	}
	el := time.Since(start)
	t.Logf("stalled client: %d events, closed %v after shutdown began", events, el)
	if retries != 1 {
		t.Fatalf("got %d retry: frames before the close, want 1", retries)
	}
	// The hub may still have been dispatching when the drain began: events
	// queued after the retry: are cut off, and the client resumes for them.
	if events < pushes*per {
		missed, err := wire.DecodeCursor(lastID)
		if err != nil || events == 0 {
			t.Fatalf("%d events, last id %q", events, lastID)
		}
		t.Logf("%d events after the close, resumable from %v", pushes*per-events, missed.Seqs)
	}
	// That the drain, not the shutdown deadline, closed the stream shows
	// in the retry: above: it is queued behind the backlog, so a stream
	// cut off by the deadline never reads it.
	<-stopped
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, nil)
	cases := []struct {
		name, path, msg string
	}{
		{"unknown param", "/v1/events?" + query("repo", "acme/app", "repos", "x"), `"repos"`},
		{"no repo", "/v1/events?" + query("ref", "refs/heads/main"), "repo"},
		{"bad repo", "/v1/events?" + query("repo", "acme/../x"), "acme/../x"},
		{"repo with .git", "/v1/events?" + query("repo", "acme/app.git"), ".git"},
		{"bad repo glob", "/v1/events?" + query("repo", "acme/x**"), "**"},
		{"bad ref pattern", "/v1/events?" + query("repo", "acme/app", "ref", "refs/heads/["), "refs/heads/["},
		{"ref outside refs/", "/v1/events?" + query("repo", "acme/app", "ref", "heads/main"), "refs/"},
		{"short branch name", "/v1/events?" + query("repo", "acme/app", "ref", "main"), `did you mean "refs/heads/main"?`},
		{"short branch name on refs", "/v1/refs?" + query("repo", "acme/app", "ref", "main"), `did you mean "refs/heads/main"?`},
		{"bad mode", "/v1/events?" + query("repo", "acme/app", "mode", "fast"), "mode"},
		{"mode on refs", "/v1/refs?" + query("repo", "acme/app", "mode", "latest"), `"mode"`},
		{"wait on events", "/v1/events?" + query("repo", "acme/app", "wait", "1s"), `"wait"`},
		{"bad repo on refs", "/v1/refs?" + query("repo", "-x"), "-x"},
		{"garbled since on refs", "/v1/refs?" + query("repo", "acme/app", "since", "zzz"), "cursor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, h, body := n.get(t, tc.path, nil)
			if st != 400 || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
				t.Fatalf("%d %q %s", st, h.Get("Content-Type"), body)
			}
			if msg := apiErrorBody(t, 400, body); !strings.Contains(msg, tc.msg) {
				t.Fatalf("message %q does not name %q", msg, tc.msg)
			}
		})
	}
}

func TestPublishErrors(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) { o.MaxBody = 64 << 10 })
	good := func(mod func(m map[string]any)) []byte {
		m := map[string]any{"id": "p-1", "repo": "acme/app", "time": "2026-01-02T03:04:05Z",
			"updates": []any{map[string]any{"ref": "refs/heads/main", "old": z, "new": oid(1)}}}
		if mod != nil {
			mod(m)
		}
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name, token, ct string
		body            []byte
		status          int
		msg             string
	}{
		{"bad JSON", testToken, "application/json", []byte(`{"id": x}`), 400, "JSON syntax"},
		{"truncated JSON", testToken, "application/json", []byte(`{"id":`), 400, "push"},
		{"not an object", testToken, "", []byte(`[1]`), 400, "push"},
		{"empty body", testToken, "", nil, 400, "empty"},
		{"unknown field", testToken, "", good(func(m map[string]any) { m["colour"] = "red" }), 400, "colour"},
		{"trailing data", testToken, "", append(good(nil), []byte(` {}`)...), 400, "after"},
		{"invalid object id", testToken, "", good(func(m map[string]any) {
			m["updates"] = []any{map[string]any{"ref": "refs/heads/main", "old": z, "new": "XYZ"}}
		}), 400, "object id"},
		{"invalid ref", testToken, "", good(func(m map[string]any) {
			m["updates"] = []any{map[string]any{"ref": "refs/heads/a..b", "old": z, "new": oid(1)}}
		}), 400, "a..b"},
		{"missing time", testToken, "", good(func(m map[string]any) { delete(m, "time") }), 400, "time"},
		{"wrong type", testToken, "", good(func(m map[string]any) { m["repo"] = 5 }), 400, "repo"},
		{"wrong token", "nope", "", good(nil), 401, "token"},
		{"missing token", "", "", good(nil), 401, "token"},
		{"wrong content type", testToken, "text/plain", good(nil), 415, "Content-Type"},
		{"too large", testToken, "", good(func(m map[string]any) { m["pusher"] = strings.Repeat("x", 70<<10) }), 413, "larger"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, _, body := n.publishRaw(t, tc.token, tc.ct, tc.body)
			if st != tc.status {
				t.Fatalf("%d %s, want %d", st, body, tc.status)
			}
			if msg := apiErrorBody(t, tc.status, body); !strings.Contains(msg, tc.msg) {
				t.Fatalf("message %q does not mention %q", msg, tc.msg)
			}
		})
	}
	// Publishing is idempotent on the push id.
	for range 2 {
		st, _, body := n.publishRaw(t, testToken, "application/json; charset=utf-8", good(nil))
		if st != 200 || !strings.Contains(string(body), `"published":1`) {
			t.Fatalf("%d %s", st, body)
		}
	}
	if got := n.metric(t, "refcast_events_received_total"); got > 1 {
		t.Fatalf("a repeated push id was dispatched again (%v events)", got)
	}
}

// TestPublishSeedBody: a seed may be larger than MaxBody (up to
// MaxSeedBody) for a credential checked before the body is read; an
// ordinary push may not, and neither may an unverified caller.
func TestPublishSeedBody(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) {
		o.MaxBody, o.MaxSeedBody = 16<<10, 256<<10
	})
	push := func(seed bool, refs int) []byte {
		ups := make([]any, refs)
		for i := range ups {
			u := map[string]any{"ref": fmt.Sprintf("refs/heads/b%06d", i), "new": oid(i + 1)}
			if !seed {
				u["old"] = z
			}
			ups[i] = u
		}
		b, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("p-%v-%d", seed, refs), "repo": "acme/big",
			"time": "2026-01-02T03:04:05Z", "seed": seed, "head": "refs/heads/b000000", "updates": ups})
		return b
	}
	for _, tc := range []struct {
		name, token string
		body        []byte
		status      int
		msg         string
	}{
		{"seed over MaxBody", testToken, push(true, 1000), 200, ""},
		{"push over MaxBody", testToken, push(false, 1000), 413, "only a seed"},
		{"seed over MaxSeedBody", testToken, push(true, 5000), 413, "larger than 262144"},
		{"seed from a wrong token", "nope", push(true, 1000), 401, "token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.body) <= 16<<10 {
				t.Fatalf("test body of %d bytes is not over MaxBody", len(tc.body))
			}
			var st int
			var body []byte
			if tc.status == 200 {
				st, _, body = n.publishRaw(t, tc.token, "", tc.body)
			} else {
				st, body = n.publishRefused(t, tc.token, tc.body)
			}
			if st != tc.status {
				t.Fatalf("%d %s, want %d", st, body, tc.status)
			}
			if tc.status != 200 {
				if msg := apiErrorBody(t, tc.status, body); !strings.Contains(msg, tc.msg) {
					t.Fatalf("message %q does not mention %q", msg, tc.msg)
				}
			}
		})
	}
	st, err := n.bus.Refs(t.Context(), "acme/big")
	if err != nil || len(st.Refs) != 1000 || !st.Complete {
		t.Fatalf("seeded state: %d refs, complete %v, %v", len(st.Refs), st.Complete, err)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	// Its last loop publishes 2 per 25 ms until the closed streams are
	// noticed: past the default burst if that takes over ~3 s.
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) { o.PublishRate = -1 })
	s := n.subscribe(t, query("repo", "acme/app"), nil)
	s.opening()
	other := n.subscribe(t, query("repo", "acme/lib"), nil)
	other.opening()
	if got := n.metric(t, "refcast_connections"); got != 2 {
		t.Fatalf("refcast_connections = %v, want 2", got)
	}
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1)), upd("refs/heads/dev", z, oid(2))))
	s.events(2, 5*time.Second)
	eventually(t, 2*time.Second, "counters", func() bool {
		return n.metric(t, "refcast_events_received_total") == 2 && n.metric(t, "refcast_deliveries_total") == 2
	})
	if got := n.metric(t, "refcast_events_published_total"); got != 2 {
		t.Errorf("refcast_events_published_total = %v, want 2", got)
	}
	st, _, body := n.get(t, "/metrics", nil)
	for _, want := range []string{"refcast_connections 2", "refcast_events_received_total 2", "refcast_deliveries_total 2", "refcast_fanout_latency_seconds_count 2"} {
		if st != 200 || !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	s.close()
	other.close()
	// A closed peer shows on the write after the one its reset answers;
	// writes to a busy stream are batched, so keep publishing, spaced.
	old := map[string]string{"acme/app": oid(1), "acme/lib": z}
	for i := 10; n.metric(t, "refcast_connections") != 0; i++ {
		if i > 200 {
			t.Fatal("closed streams not noticed")
		}
		for repo, o := range old {
			n.publish(t, newPush(repo, upd("refs/heads/main", o, oid(i))))
			old[repo] = oid(i)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestServeEndsWhenBusCloses: a node whose bus is closed under it stops
// serving with an error instead of running on without events.
func TestServeEndsWhenBusCloses(t *testing.T) {
	t.Parallel()
	b := newBus(t, memory.Options{})
	n := startNode(t, b, 50*time.Millisecond, nil)
	s := n.subscribe(t, query("repo", "acme/app"), nil)
	s.opening()
	_ = b.Close()
	select {
	case err := <-n.done:
		n.once.Do(func() {})
		if !errors.Is(err, bus.ErrClosed) {
			t.Fatalf("Serve returned %v, want bus.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5s after its bus closed")
	}
	if _, err := s.next(5 * time.Second); err == nil {
		// a retry hint is fine; the stream must end after it
		if _, err := s.next(5 * time.Second); err == nil {
			t.Fatal("stream still open after the node stopped")
		}
	}
}

// TestDrainingNodeBouncesNewStreams: a stream that reaches a node after it
// began draining gets 200 and a retry: hint, then the end of the stream —
// not a 503, on which an EventSource would give up for good.
func TestDrainingNodeBouncesNewStreams(t *testing.T) {
	t.Parallel()
	b, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Bus: b, Retry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// A 6 s drain: the knocks below must land while it runs, and a loaded
	// machine has been seen to take a second between two of them.
	go func() { done <- srv.Serve(ctx, ln, 6*time.Second) }()
	base := "http://" + ln.Addr().String()
	waitReady := time.Now().Add(patience)
	for srv.Ready(context.Background()) != nil {
		if time.Now().After(waitReady) {
			t.Fatal("node not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Open streams keep the drain (closing one every 6s/4) going while we
	// knock.
	for range 4 {
		hold, err := http.Get(base + "/v1/events?repo=acme/app")
		if err != nil {
			t.Fatal(err)
		}
		defer hold.Body.Close()
	}
	cancel()
	client := &http.Client{Timeout: 3 * time.Second}
	deadline := time.Now().Add(patience)
	for {
		res, err := client.Get(base + "/v1/events?repo=acme/app")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if strings.Contains(string(body), "retry: ") && !strings.Contains(string(body), "event: hello") {
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("bounce = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never bounced; last answer %d %q", res.StatusCode, body)
		}
	}
	b.Close()
	<-done
}
