package fanout

import (
	"fmt"
	"math"
	"net"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/refcast/refcast/bus"
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
