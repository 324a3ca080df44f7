package fanout

import (
	"slices"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

// TestShedOrder: memory shedding evicts streams whose client is the cause
// before those whose frames wait for the node: stuck ones first, then
// those with a full socket (not known to read before known readers), and
// last those whose socket is not full, even when these hold the most and
// went live longest ago (a reader the writers had not reached yet was
// closed before streams that never read, in BenchmarkStalledReaders),
// and of these only those holding frames of their own.
func TestShedOrder(t *testing.T) {
	const each = 1000 // bytes of frames of its own per stream
	type state struct {
		name       string
		stalled    bool // socket full
		idleWrites int
		reads      bool
		progressAt time.Duration // before now
		shared     bool          // its frame is not its own
	}
	states := []state{
		{name: "waiting, shared", progressAt: 2 * time.Hour, shared: true},
		{name: "waiting", progressAt: time.Hour},
		{name: "full reader", stalled: true, reads: true, progressAt: time.Minute},
		{name: "full", stalled: true, progressAt: time.Second},
		{name: "stuck", stalled: true, idleWrites: stuckAfter},
	}
	for _, tc := range []struct {
		keep int // streams left once shed is down to 3/4 of the bound
		kept []string
	}{
		{4, []string{"waiting, shared", "waiting", "full reader", "full"}},
		{3, []string{"waiting, shared", "waiting", "full reader"}},
		{2, []string{"waiting, shared", "waiting"}},
		// A stream waiting for the node's writers with shared frames
		// only is not shed: closing it frees nothing they share...
		{1, []string{"waiting, shared"}},
		// ...unless the node holds more than twice the bound.
		{0, nil},
	} {
		// The smallest bound whose 3/4 holds keep streams' frames, and
		// (but for keep 0) at least half of what all of them hold.
		per := int64(each + slotBytes)
		bound := max(int64(tc.keep)*per, 1)
		if tc.keep > 0 {
			bound = max(bound, int64(len(states))*per/2+1)
		}
		for bound-bound/4 < int64(tc.keep)*per {
			bound++
		}
		e := runEngine(t, func(o *Options) { o.MaxQueuedBytes = bound })
		f, err := bus.ParseFilter([]string{"acme/app"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		names := map[*subscriber]string{}
		now := time.Now()
		for _, st := range states {
			s, _, err := e.Register(Spec{Filter: f})
			if err != nil {
				t.Fatal(err)
			}
			names[s.s] = st.name
			s.s.mu.Lock()
			if st.stalled {
				s.s.stalledAt = now
			}
			s.s.idleWrites, s.s.reads, s.s.progressAt = st.idleWrites, st.reads, now.Add(-st.progressAt)
			s.s.mu.Unlock()
			fr := newFrame(make([]byte, each), nil)
			fr.own = !st.shared
			if reason, _ := s.s.add(fr, 8); reason != "" {
				t.Fatalf("queueing to %s: evicted (%s)", st.name, reason)
			}
		}
		e.shed()
		var kept []string
		e.mu.RLock()
		for _, s := range e.all {
			kept = append(kept, names[s])
		}
		e.mu.RUnlock()
		slices.Sort(kept)
		slices.Sort(tc.kept)
		if !slices.Equal(kept, tc.kept) {
			t.Errorf("bound %d: kept %q, want %q", bound, kept, tc.kept)
		}
	}
}

// TestFlowingStreamRetriedSoon: a stream whose socket filled during a
// write that still took flowBytes is due for a retry after flowRetry, not
// at the next tick; one that took less waits for the tick.
func TestFlowingStreamRetriedSoon(t *testing.T) {
	// Not run: the housekeeper would take the retries itself.
	e := New(nil, Options{})
	fast, slow := &subscriber{eng: e}, &subscriber{eng: e}
	e.stall(fast, flowBytes)
	e.stall(slow, flowBytes-1)
	select {
	case <-e.flowBell:
	default:
		t.Fatal("the housekeeper was not woken for a flowing stream")
	}
	e.stallMu.Lock()
	fastAt, slowAt := e.stalled[fast], e.stalled[slow]
	e.stallMu.Unlock()
	if !fastAt.Before(slowAt) || slowAt.Sub(fastAt) < HousekeeperTick-flowRetry-time.Millisecond {
		t.Errorf("retry due at %v (flowing) and %v (not): want the flowing one a tick sooner", fastAt, slowAt)
	}
	if more := e.retryFlowing(fastAt); more {
		t.Error("retryFlowing left work for later")
	}
	select {
	case s := <-e.retry:
		if s != fast {
			t.Error("retried the stream that took less than flowBytes")
		}
	default:
		t.Fatal("the flowing stream was not handed to the retry writers")
	}
	e.stallMu.Lock()
	_, parked := e.stalled[slow]
	e.stallMu.Unlock()
	if !parked {
		t.Error("the other stream left the stalled set")
	}
}

// TestReadsAfterTaking: a client whose socket took readsAfter counts as
// reading, though its socket never filled; one that never reads does not
// after the same push (its socket takes its receive buffer and the unsent
// cap, far less).
func TestReadsAfterTaking(t *testing.T) {
	n := runEngine(t, func(o *Options) { o.WriteTimeout = time.Hour })
	reader, cli := n.readerStream(t, Spec{}, "acme/app")
	discardReader(cli)
	stalled := n.stalledStream(t, Spec{}, "acme/app")
	// 600 frames of 2.3 KB: 1.4 MB.
	n.publish(t, bigPush("acme/app", 0, 600, func(int) string { return z }, func(i int) string { return oid(i + 1) }))
	eventually(t, patience, "the reader to count as reading", func() bool {
		reader.s.mu.Lock()
		defer reader.s.mu.Unlock()
		return reader.s.reads
	})
	stalled.s.mu.Lock()
	reads := stalled.s.reads
	stalled.s.mu.Unlock()
	if reads {
		t.Error("a client that never reads counts as reading")
	}
}
