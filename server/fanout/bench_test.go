package fanout

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/refcast/refcast/bus"
)

// writeSignal is a Writes counter that says when a number of writes is
// reached.
type writeSignal struct {
	n, want atomic.Int64
	done    chan struct{} // capacity 1
}

func (w *writeSignal) Inc() { w.Add(1) }
func (w *writeSignal) Add(v float64) {
	if w.n.Add(int64(v)) == w.want.Load() {
		w.done <- struct{}{}
	}
}

var _ Counter = (*writeSignal)(nil)

// hijackedStreams registers n live streams on repo, each on the server end
// of a loopback TCP connection whose client end reads and discards, as a
// hijacked /v1/events stream is after its opening.
func hijackedStreams(tb testing.TB, h *Engine, n int, repo string) {
	tb.Helper()
	f, err := bus.ParseFilter([]string{repo}, []string{"refs/heads/*"})
	if err != nil {
		tb.Fatal(err)
	}
	for range n {
		srv, cli := loopback(tb)
		discardReader(cli)
		st, _, err := h.Register(Spec{Filter: f})
		if err != nil {
			tb.Fatal(err)
		}
		if !st.Attach(srv) {
			tb.Fatal("stream removed before Attach")
		}
		st.GoLive(nil)
	}
}

// startWriters starts the engine's writer pool as Run does, without the
// bus reader (the caller dispatches) or the housekeeper (no heartbeats);
// it stops with the test.
func startWriters(tb testing.TB, h *Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range h.opts.Writers {
		wg.Go(func() { h.writer(ctx, h.ready) })
	}
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// BenchmarkFanout dispatches one event to N hijacked streams on one repo
// through the real path, without HTTP: the bus reader's queueing and
// hand-off (dispatch), then the writer pool's one send per stream to a
// loopback socket. An iteration ends when every stream's write is done.
// ns/op is the time to reach all N streams, ns/stream its share per
// stream (the readers' wake-ups included, on the same processors).
// Batching is off, so each event is a write per stream. allocs/op is the
// event's 9 (as in TestDispatchAllocations) plus one per stream: writeNow
// itself allocates nothing (TestWriteNowAllocates), but flushConn's copy
// of the buffers' slice header (rest) escapes to the heap, 24 bytes a
// write.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			writes := &writeSignal{done: make(chan struct{}, 1)}
			h := testHub(b, bus.DefaultPartitions, func(o *Options) {
				o.BatchDelay = -1
				o.MaxConnections = n
				o.Metrics.Writes = writes
			})
			startWriters(b, h)
			ev := benchEvent()
			ev.Partition = bus.PartitionOf(ev.Repo, bus.DefaultPartitions)
			hijackedStreams(b, h, n, ev.Repo)
			fanout := func() {
				ev.Seq++
				writes.want.Add(int64(n))
				dispatch(h, ev)
				<-writes.done
			}
			fanout() // buffers and queues grow once
			b.ReportAllocs()
			for b.Loop() {
				fanout()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/stream")
			if c := h.Count(); c != n {
				b.Fatalf("%d streams left, want %d (evictions?)", c, n)
			}
		})
	}
}
