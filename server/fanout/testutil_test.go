package fanout

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
)

// TestMain checks that no test leaves a goroutine behind: every running
// engine is stopped (Run returns only after its goroutines exit) and every
// reader closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const z = bus.ZeroSHA1

func oid(i int) string { return fmt.Sprintf("%040x", i) }

func upd(ref, old, new string) bus.RefUpdate { return bus.RefUpdate{Ref: ref, Old: old, New: new} }

// counter is a Counter, Gauge and Observer tests can read: the sum of what
// it was given (Set replaces it).
type counter struct{ bits atomic.Uint64 }

func (c *counter) Inc()              { c.Add(1) }
func (c *counter) Set(v float64)     { c.bits.Store(math.Float64bits(v)) }
func (c *counter) Observe(v float64) { c.Add(v) }
func (c *counter) Add(v float64) {
	for {
		old := c.bits.Load()
		if c.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}
func (c *counter) value() float64 { return math.Float64frombits(c.bits.Load()) }

var (
	_ Counter  = (*counter)(nil)
	_ Gauge    = (*counter)(nil)
	_ Observer = (*counter)(nil)
)

// testMetrics is a Metrics whose every field counts into its own counter,
// so the engine pays what it pays with the server's collectors (an atomic
// update per call).
func testMetrics() Metrics {
	evictions, rejected := new(counter), new(counter)
	return Metrics{
		Connections: new(counter), EventsIn: new(counter), Deliveries: new(counter), Writes: new(counter),
		FanoutLatency: new(counter), Stalls: new(counter), Coalesced: new(counter), BusReconnects: new(counter),
		Resets:    new(counter),
		Evictions: func(string) Counter { return evictions },
		Rejected:  func(string) Counter { return rejected },
	}
}

// loopback returns both ends of a loopback TCP connection, closed with the
// test.
func loopback(tb testing.TB) (server, client net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = client.Close() })
	server, err = ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = server.Close() })
	return server, client
}

// discardReader reads and discards everything c sends until it is closed
// (with the test), into one buffer, so that a benchmark's allocation count
// is the server side's alone.
func discardReader(c net.Conn) {
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
}

// testEngine is an engine running on a memory bus, stopped with the test.
type testEngine struct {
	*Engine
	bus       bus.Bus
	m         Metrics
	evictions *counter
}

// runEngine runs an engine on a new memory bus and waits until it follows
// the bus. mod adjusts the options.
func runEngine(t testing.TB, mod func(*Options)) *testEngine {
	t.Helper()
	b, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return runEngineOn(t, b, mod)
}

// runEngineOn is runEngine on b.
func runEngineOn(t testing.TB, b bus.Bus, mod func(*Options)) *testEngine {
	t.Helper()
	evictions := new(counter)
	m := testMetrics()
	m.Evictions = func(string) Counter { return evictions }
	opts := Options{Heartbeat: time.Minute, Metrics: m} // tests that want heartbeats lower it
	if mod != nil {
		mod(&opts)
	}
	n := &testEngine{Engine: New(b, opts), bus: b, m: opts.Metrics, evictions: evictions}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, 5*time.Second, "the engine to follow the bus", func() bool {
		_, ok := n.Position()
		return ok
	})
	return n
}

// writes is the writes counter.
func (n *testEngine) writes() float64 { return n.m.Writes.(*counter).value() }

var pushSeq atomic.Int64

func newPush(repo string, updates ...bus.RefUpdate) *bus.Push {
	return &bus.Push{ID: fmt.Sprintf("p-%d", pushSeq.Add(1)), Repo: repo, Time: time.Now().UTC(), Source: "api", Updates: updates}
}

// bigPush is a push of count updates with 1000-byte subjects and authors,
// so its frames are large.
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

func (n *testEngine) publish(t testing.TB, p *bus.Push) {
	t.Helper()
	if _, err := n.bus.Publish(t.Context(), p); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// dispatched waits until the engine has taken everything the bus holds
// (publish returns once the bus has the push; the engine follows on its
// own goroutine).
func (n *testEngine) dispatched(t testing.TB) {
	t.Helper()
	eventually(t, patience, "the engine to take the published events", func() bool {
		heads, err := n.bus.Heads(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		pos, ok := n.Position()
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

// testStream is the client end of a hijacked stream.
type testStream struct {
	conn net.Conn
	r    *bufio.Reader
	sub  *subscriber
}

// settled waits until no writer holds the stream: the write that delivered
// what the client read has finished, and its bookkeeping (lastWrite,
// scheduled) is done. The client can read a write's bytes before that.
func (s *testStream) settled(t testing.TB) {
	t.Helper()
	eventually(t, patience, "the stream's writer to finish", func() bool {
		s.sub.mu.Lock()
		defer s.sub.mu.Unlock()
		return !s.sub.scheduled
	})
}

// register registers a stream of sp on repo, not live.
func (n *testEngine) register(tb testing.TB, sp Spec, repo string) Stream {
	tb.Helper()
	f, err := bus.ParseFilter([]string{repo}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	sp.Filter = f
	st, _, err := n.Register(sp)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// registerApp registers a stream of sp on repo acme/app, not live, and
// removes it with the test.
func registerApp(tb testing.TB, n *testEngine, sp Spec) *subscriber {
	tb.Helper()
	st := n.register(tb, sp, "acme/app")
	tb.Cleanup(func() { st.Remove(ReasonClosed) })
	return st.s
}

// stream registers a live hijacked stream on repo, as /v1/events does
// after its opening, and returns the client's end.
func (n *testEngine) stream(t testing.TB, sp Spec, repo string) *testStream {
	t.Helper()
	srv, cli := loopback(t)
	st := n.attach(t, sp, srv, repo)
	return &testStream{conn: cli, r: bufio.NewReaderSize(cli, 64<<10), sub: st.s}
}

// next returns the next event frame's event, skipping comments and other
// frames; it fails the test on a read error (set a read deadline).
func (s *testStream) next(t testing.TB) bus.Event {
	t.Helper()
	for {
		var event, data string
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			line = strings.TrimSuffix(line, "\n")
			if line == "" {
				break
			}
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				event = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				data = v
			}
		}
		if event != "ref" {
			continue
		}
		var ev bus.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event data %q: %v", data, err)
		}
		return ev
	}
}

// events reads n events (patience guards a hang).
func (s *testStream) events(t testing.TB, n int) []bus.Event {
	t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(patience))
	var evs []bus.Event
	for range n {
		evs = append(evs, s.next(t))
	}
	return evs
}

func refsOf(evs []bus.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Ref)
	}
	return out
}

func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = max(d, patience)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// patience is the least time a test waits for something that must happen
// before it fails: a guard against hangs, never a measure of speed (a
// loaded 2-core machine under -race takes seconds for what takes
// milliseconds when quiet).
const patience = 30 * time.Second
