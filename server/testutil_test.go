package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/wire"
)

// TestMain checks that no test leaves a goroutine behind: every test stops
// its nodes (Serve returns only after every goroutine it started exits) and
// closes its clients.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testToken is the publish token of every test node.
const testToken = "t"

// testNode is one running refcast node on a 127.0.0.1:0 listener.
type testNode struct {
	t      testing.TB
	srv    *Server
	bus    bus.Bus
	reg    *prometheus.Registry
	url    string // http://127.0.0.1:port
	addr   string
	cancel context.CancelFunc
	done   chan error // Serve's result
	once   sync.Once
	took   time.Duration // how long Serve took to return after cancel
}

func newBus(t testing.TB, opts memory.Options) *memory.Bus {
	t.Helper()
	b, err := memory.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// startNode runs a node on b. mod adjusts the options; drain is the
// shutdown window used when the test ends (or stop is called).
func startNode(t testing.TB, b bus.Bus, drain time.Duration, mod func(*Options)) *testNode {
	t.Helper()
	opts := Options{
		Bus:          b,
		PublishToken: testToken,
		Logger:       slog.New(slog.DiscardHandler),
		Heartbeat:    time.Minute, // tests that want heartbeats lower it
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{t: t, srv: srv, bus: b, reg: srv.reg, url: "http://" + ln.Addr().String(), addr: ln.Addr().String(),
		cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- srv.Serve(ctx, ln, drain) }()
	t.Cleanup(func() { n.stop() })
	// Wait until the hub follows the bus.
	deadline := time.Now().Add(patience)
	for srv.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("node not ready after %v", patience)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return n
}

// stop cancels Serve and waits for it (bounded); it returns how long Serve
// took to return. Safe to call twice.
func (n *testNode) stop() time.Duration {
	n.once.Do(func() {
		start := time.Now()
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				n.t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			n.t.Error("Serve did not return within 20s of cancel")
		}
		n.took = time.Since(start)
	})
	return n.took
}

// ---- publishing ----

var pushSeq atomic.Int64

// oid returns a distinct valid SHA-1 object id for i > 0.
func oid(i int) string { return fmt.Sprintf("%040x", i) }

// upd is a ref update for a push.
func upd(ref, old, new string) bus.RefUpdate { return bus.RefUpdate{Ref: ref, Old: old, New: new} }

func newPush(repo string, updates ...bus.RefUpdate) *bus.Push {
	return &bus.Push{
		ID:      fmt.Sprintf("p-%d", pushSeq.Add(1)),
		Repo:    repo,
		Time:    time.Now().UTC(),
		Source:  "api",
		Updates: updates,
	}
}

// publishRaw posts body to /v1/publish and returns status, headers and body.
func (n *testNode) publishRaw(t testing.TB, token, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, n.url+"/v1/publish", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

// publishRefused sends a publish the node refuses before reading all of
// its body (a 401 before any of it, a 413 past the limit), on a
// connection of its own, and returns the answer's status and body.
// net/http's client returns the error of its body write instead of the
// answer when the node has answered and closed the connection while the
// body was still going out (1 run in ~300 of TestPublishSeedBody under
// load: "write: connection reset by peer", "broken pipe"): a client sees
// the answer all the same. Here the body is written beside the read and
// its write error ignored.
func (n *testNode) publishRefused(t testing.TB, token string, body []byte) (int, []byte) {
	t.Helper()
	u, err := url.Parse(n.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "POST /v1/publish HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n", u.Host, len(body))
	if token != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", token)
	}
	req.WriteString("\r\n")
	req.Write(body)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer conn.Close() // ends the write if the node stopped reading
	wg.Go(func() { _, _ = conn.Write(req.Bytes()) })
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the answer's body: %v", err)
	}
	return resp.StatusCode, b
}

// publish sends a push through the real endpoint and fails the test
// unless it is accepted.
func (n *testNode) publish(t testing.TB, p *bus.Push) {
	t.Helper()
	body, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	st, _, resp := n.publishRaw(t, testToken, "application/json", body)
	if st != http.StatusOK {
		t.Fatalf("publish: %d %s", st, resp)
	}
	n.waitDispatched(t)
}

// waitDispatched waits until the node's engine has taken everything the
// bus holds. A publish returns once the bus has the push; the engine
// follows on its own goroutine, and on a loaded machine it can lag by
// seconds. Tests that then resume from a cursor, or compare a hello with
// the position, must not depend on that race.
func (n *testNode) waitDispatched(t testing.TB) {
	t.Helper()
	eventually(t, patience, "the node to take the published events from the bus", func() bool {
		heads, err := n.bus.Heads(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pos, ok := n.srv.engine.Position()
		if !ok || len(pos.Seqs) != len(heads) {
			return false
		}
		for p := range heads {
			if pos.Seqs[p] < heads[p].Last {
				return false
			}
		}
		return true
	})
}

var testClient = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func do(t testing.TB, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func (n *testNode) get(t testing.TB, path string, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

// apiErrorBody checks a JSON error answer and returns its message.
func apiErrorBody(t testing.TB, status int, body []byte) string {
	t.Helper()
	var e struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, body)
	}
	if e.Status != status || e.Error == "" {
		t.Fatalf("error body %q: want status %d and a message", body, status)
	}
	return e.Error
}

// ---- a raw SSE client ----

// sseFrame is one parsed frame. Comment is set for ": hb" lines.
type sseFrame struct {
	ID, Event, Data, Retry, Comment string
	hasID                           bool
	at                              time.Time
}

// sseStream is an SSE client over a raw TCP connection, so reads can have
// deadlines and the test sees exactly the bytes the node wrote.
type sseStream struct {
	t      testing.TB
	conn   net.Conn
	resp   *http.Response
	r      *bufio.Reader
	closed bool
}

// query builds a /v1/events or /v1/refs query string.
func query(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

// dialSSE opens GET /v1/events?q with extra headers and reads the response
// head. It does not fail on a non-200 status: callers check resp.
func (n *testNode) dialSSE(t testing.TB, q string, hdr map[string]string) *sseStream {
	t.Helper()
	conn, err := net.DialTimeout("tcp", n.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return startSSE(t, conn, n.addr, q, hdr)
}

func startSSE(t testing.TB, conn net.Conn, host, q string, hdr map[string]string) *sseStream {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "GET /v1/events?%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n", q, host)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	s := &sseStream{t: t, conn: conn}
	t.Cleanup(s.close)
	br := bufio.NewReader(conn)
	req, _ := http.NewRequest(http.MethodGet, "/v1/events?"+q, nil)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatalf("read response head: %v", err)
	}
	s.resp = resp
	s.r = bufio.NewReaderSize(resp.Body, 64<<10)
	return s
}

// subscribe is dialSSE that requires a 200 text/event-stream answer.
func (n *testNode) subscribe(t testing.TB, q string, hdr map[string]string) *sseStream {
	t.Helper()
	s := n.dialSSE(t, q, hdr)
	if s.resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(s.resp.Body)
		t.Fatalf("subscribe %s: %d %s", q, s.resp.StatusCode, body)
	}
	if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return s
}

func (s *sseStream) close() {
	if !s.closed {
		s.closed = true
		_ = s.conn.Close()
	}
}

// next reads one frame, waiting at most d.
func (s *sseStream) next(d time.Duration) (sseFrame, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(d))
	return readFrame(s.r)
}

func readFrame(r *bufio.Reader) (sseFrame, error) {
	var f sseFrame
	lines := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return f, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if lines == 0 {
				continue
			}
			f.at = time.Now()
			return f, nil
		}
		lines++
		name, val, _ := strings.Cut(line, ":")
		val = strings.TrimPrefix(val, " ")
		switch name {
		case "":
			f.Comment = val
		case "id":
			f.ID, f.hasID = val, true
		case "event":
			f.Event = val
		case "data":
			if f.Data != "" {
				f.Data += "\n"
			}
			f.Data += val
		case "retry":
			f.Retry = val
		default:
			return f, fmt.Errorf("unknown SSE field in line %q", line)
		}
	}
}

// must reads the next frame or fails.
func (s *sseStream) must(d time.Duration) sseFrame {
	s.t.Helper()
	f, err := s.next(d)
	if err != nil {
		s.t.Fatalf("read frame: %v", err)
	}
	return f
}

// nextNonHB reads the next frame that is not a heartbeat.
func (s *sseStream) nextNonHB(d time.Duration) sseFrame {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		f := s.must(time.Until(deadline))
		if f.Comment == "" || f.Event != "" || f.hasID {
			return f
		}
	}
}

// opening reads the retry: frame and the frames up to and including hello,
// and returns those in between (replayed events or a reset) and the hello.
func (s *sseStream) opening() (between []sseFrame, hello sseFrame) {
	s.t.Helper()
	f := s.nextNonHB(patience)
	if f.Retry == "" || f.Event != "" || f.hasID {
		s.t.Fatalf("first frame %+v: want a lone retry:", f)
	}
	for {
		f := s.nextNonHB(patience)
		if f.Event == "hello" {
			var h struct{ Cursor string }
			if err := json.Unmarshal([]byte(f.Data), &h); err != nil || h.Cursor == "" || h.Cursor != f.ID {
				s.t.Fatalf("hello %+v: data must carry the cursor of its id", f)
			}
			return between, f
		}
		between = append(between, f)
	}
}

// events reads n ref/sync frames (skipping heartbeats) and decodes them.
func (s *sseStream) events(n int, d time.Duration) ([]bus.Event, []sseFrame) {
	s.t.Helper()
	var evs []bus.Event
	var frames []sseFrame
	deadline := time.Now().Add(max(d, patience))
	for len(evs) < n {
		f := s.nextNonHB(time.Until(deadline))
		if f.Event != "ref" && f.Event != "sync" {
			s.t.Fatalf("frame %d: got %+v, want an event", len(evs), f)
		}
		evs = append(evs, decodeEvent(s.t, f))
		frames = append(frames, f)
	}
	return evs, frames
}

func decodeEvent(t testing.TB, f sseFrame) bus.Event {
	t.Helper()
	if !f.hasID {
		t.Fatalf("event frame without id: %+v", f)
	}
	if _, err := wire.DecodeCursor(f.ID); err != nil {
		t.Fatalf("event id %q: %v", f.ID, err)
	}
	var ev bus.Event
	if err := json.Unmarshal([]byte(f.Data), &ev); err != nil {
		t.Fatalf("event data %q: %v", f.Data, err)
	}
	return ev
}

// refsOf lists the refs of events, "repo ref new" each, for comparisons.
func refsOf(evs []bus.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Repo + " " + e.Ref + " " + e.New
	}
	return out
}

// ---- metrics ----

// metric returns the value of a gauge or counter, summed over label sets
// matching labels (name=value pairs).
func (n *testNode) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelValue(m, labels[i]) != labels[i+1] {
					continue metrics
				}
			}
			switch {
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// patience is the least time a test waits for something that must
// happen before it fails: a guard against hangs, never a measure of
// speed. A loaded 2-core machine running the race detector has been seen
// to take seconds for what takes milliseconds when it is quiet, so the
// guards are far above any healthy figure.
const patience = 30 * time.Second

// eventually polls cond every few milliseconds for up to d, or patience
// if that is longer.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = max(d, patience)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
