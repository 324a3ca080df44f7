package fanout

import (
	"net"
	"runtime"
	"slices"
	"testing"
	"time"
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
	}
	states := []state{
		{name: "waiting", progressAt: time.Hour},
		{name: "full reader", stalled: true, reads: true, progressAt: time.Minute},
		{name: "full", stalled: true, progressAt: time.Second},
		{name: "stuck", stalled: true, idleWrites: stuckAfter},
	}
	for _, tc := range []struct {
		keep int // streams left once shed is down to 3/4 of the bound
		kept []string
	}{
		{3, []string{"waiting", "full reader", "full"}},
		{2, []string{"waiting", "full reader"}},
		{1, []string{"waiting"}},
	} {
		// The smallest bound whose 3/4 holds keep streams' frames.
		per := int64(each + slotBytes)
		bound := int64(tc.keep) * per
		for bound-bound/4 < int64(tc.keep)*per {
			bound++
		}
		e := runEngine(t, func(o *Options) { o.MaxQueuedBytes = bound })
		names := map[*subscriber]string{}
		now := time.Now()
		for _, st := range states {
			s := registerApp(t, e, Spec{})
			names[s] = st.name
			s.mu.Lock()
			if st.stalled {
				s.stalledAt = now
			}
			s.idleWrites, s.reads, s.progressAt = st.idleWrites, st.reads, now.Add(-st.progressAt)
			s.mu.Unlock()
			fr := newFrame(make([]byte, each), nil)
			fr.own = true
			if reason, _ := s.add(fr, 8); reason != "" {
				t.Fatalf("queueing to %s: evicted (%s)", st.name, reason)
			}
		}
		e.shed()
		kept := keptNames(e, names)
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

// TestShedSparesSharedBacklog: a known reader, or a hijacked stream
// waiting for the node's writers, whose backlog other streams share is not
// shed (closing it frees only its slots) until the node holds twice the
// bound; a stuck one, one holding frames no other stream holds, and a
// handler-path stream are. A shed that finds nothing to evict keeps the
// next one back for shedIdleBackoff, unless the total passes twice the
// bound.
func TestShedSparesSharedBacklog(t *testing.T) {
	const each = 1000
	type state struct {
		name        string
		stalled     bool
		idleWrites  int
		reads       bool
		sole        bool // its frame is held by no other stream
		handlerPath bool // no hijacked connection
	}
	states := []state{
		{name: "reader 1", stalled: true, reads: true},
		{name: "reader 2", stalled: true, reads: true},
		{name: "waiting"},
		{name: "stuck", stalled: true, idleWrites: stuckAfter},
		{name: "sole reader", stalled: true, reads: true, sole: true},
		{name: "handler path", handlerPath: true},
	}
	setup := func(bound int64) (*testEngine, map[*subscriber]string) {
		e := runEngine(t, func(o *Options) { o.MaxQueuedBytes = bound })
		shared := newFrame(make([]byte, each), nil)
		names := map[*subscriber]string{}
		for _, st := range states {
			s := registerApp(t, e, Spec{})
			names[s] = st.name
			s.mu.Lock()
			if !st.handlerPath {
				conn, peer := net.Pipe()
				t.Cleanup(func() { _ = peer.Close() })
				s.conn = conn
			}
			if st.stalled {
				s.stalledAt = time.Now()
			}
			s.idleWrites, s.reads = st.idleWrites, st.reads
			s.mu.Unlock()
			fr := shared
			if st.sole {
				fr = newFrame(make([]byte, each), nil)
			}
			if reason, _ := s.add(fr, 8); reason != "" {
				t.Fatalf("queueing to %s: evicted (%s)", st.name, reason)
			}
		}
		return e, names
	}
	held := 2*each + int64(len(states))*slotBytes // the shared frame, the sole one, a slot each
	// Over the bound, under twice it, and three quarters of it less than
	// the spared streams hold with the handler-path one.
	bound := int64(each + 100)
	e, names := setup(bound)
	for range len(states) {
		e.shed()
	}
	if kept, want := keptNames(e, names), []string{"reader 1", "reader 2", "waiting"}; !slices.Equal(kept, want) {
		t.Errorf("holding %d of %d: kept %q, want %q", held, bound, kept, want)
	}
	// Only spared streams left, still over the bound: nothing to evict,
	// and no scan for a while.
	e.opts.MaxQueuedBytes = e.QueuedBytes() - 1
	e.shed()
	if e.shedDue() {
		t.Error("a shed that found nothing to evict left the next one due at once")
	}
	e.opts.MaxQueuedBytes = e.QueuedBytes()/2 - 1
	if !e.shedDue() {
		t.Error("past twice the bound, a shed was not due")
	}
	// Past twice the bound even without the others, every stream goes.
	e, names = setup(500)
	for range 4 * len(states) {
		e.shed()
	}
	if kept := keptNames(e, names); len(kept) != 0 {
		t.Errorf("holding more than twice the bound: kept %q", kept)
	}
}

// keptNames is the sorted names of the streams still registered.
func keptNames(e *testEngine, names map[*subscriber]string) []string {
	var kept []string
	e.mu.RLock()
	for _, s := range e.all {
		kept = append(kept, names[s])
	}
	e.mu.RUnlock()
	slices.Sort(kept)
	return kept
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
	// Elsewhere the unsent cap does not exist (lowat_other.go): a client
	// that never reads takes the whole send buffer, over 1 MiB on loopback.
	if reads && runtime.GOOS == "linux" {
		t.Error("a client that never reads counts as reading")
	}
}

// TestReadsForgottenWhenStuck: a client known to read that stops (two
// writes in a row take nothing) must show it reads again: it loses the
// StallTimeout wait, the lifted unsent cap and shedding's reprieve.
func TestReadsForgottenWhenStuck(t *testing.T) {
	// Not run: the housekeeper would take the retries itself.
	e := New(nil, Options{})
	s := &subscriber{eng: e, reads: true, taken: readsAfter}
	for i := range stuckAfter {
		e.stall(s, 0)
		s.mu.Lock()
		reads := s.reads
		s.mu.Unlock()
		if stuck := i+1 >= stuckAfter; reads == stuck {
			t.Errorf("after %d writes that took nothing: reads %v", i+1, reads)
		}
	}
	if s.taken != 0 {
		t.Errorf("taken %d once stuck, want 0", s.taken)
	}
}
