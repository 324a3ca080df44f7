package fanout

import (
	"testing"
	"time"
)

// writesSettled waits for the writes counter to reach at least want (it
// moves just after the write, so a client can read first), lets it settle
// and returns it.
func writesSettled(t *testing.T, n *testEngine, want float64) float64 {
	t.Helper()
	eventually(t, 5*time.Second, "the writes counter", func() bool { return n.writes() >= want })
	time.Sleep(50 * time.Millisecond)
	return n.writes()
}

// TestBusMessageIsOneWrite: the events of one bus message (here one push
// of five refs) are all queued before a writer sees the subscriber, so an
// idle stream gets them in one write even with batching off.
func TestBusMessageIsOneWrite(t *testing.T) {
	t.Parallel()
	n := runEngine(t, func(o *Options) { o.BatchDelay = -1 })
	s := n.stream(t, Spec{}, "acme/app")
	before := n.writes()
	p := newPush("acme/app")
	for i := range 5 {
		p.Updates = append(p.Updates, upd("refs/heads/b"+string(rune('a'+i)), z, oid(i+1)))
	}
	n.publish(t, p)
	if got := refsOf(s.events(t, 5)); len(got) != 5 {
		t.Fatalf("got %v", got)
	}
	if got := writesSettled(t, n, before+1) - before; got != 1 {
		t.Fatalf("five events of one push took %v writes, want 1", got)
	}
}

// heldBack is how many hand-offs the engine has set aside for BatchDelay.
func (n *testEngine) heldBack() int {
	n.laterMu.Lock()
	defer n.laterMu.Unlock()
	return n.Engine.heldBack
}

// TestBatchDelay: a stream that was written recently gets the events that
// follow together, once BatchDelay has passed since that write, in one
// write; a stream that has been quiet for BatchDelay gets an event at once.
//
// What is checked is the engine's decision (held back or not, counted by
// heldBack) and the number of writes, never how long a delivery took: a
// quiet stream is made quiet by sleeping longer than BatchDelay (load only
// lengthens a sleep), and the busy case is judged only when publishing
// itself was fast enough for it to be busy.
func TestBatchDelay(t *testing.T) {
	t.Parallel()
	const delay = time.Second
	n := runEngine(t, func(o *Options) { o.BatchDelay = delay })
	s := n.stream(t, Spec{}, "acme/app")
	time.Sleep(delay + 100*time.Millisecond) // going live counts as a write

	// Quiet stream: handed to a writer at once, not held back.
	held := n.heldBack()
	quiet := time.Now()
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1))))
	s.events(t, 1)
	if got := n.heldBack(); got != held {
		t.Fatalf("an event to a stream quiet for longer than BatchDelay (%v) was held back", delay)
	}
	// Until that write's writer let go: events arriving while it still
	// holds the stream join its queue without a hand-off, and so are never
	// held back (seen under load: the client read the bytes first).
	s.settled(t)

	// Busy stream: the next events wait until BatchDelay has passed since
	// the write above (which came after quiet) and share one write.
	before := n.writes()
	start := time.Now()
	for i := 2; i <= 5; i++ {
		n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(i-1), oid(i))))
	}
	// Until the engine has handed all four off: that, not the publishes
	// returning, is what must fall within BatchDelay of the last write.
	n.dispatched(t)
	publishing := time.Since(start)
	evs := s.events(t, 4)
	if len(evs) != 4 || evs[3].New != oid(5) {
		t.Fatalf("got %+v", evs)
	}
	writes := writesSettled(t, n, before+1) - before
	switch {
	case publishing > delay/2:
		t.Logf("publishing took %v, too long to expect the stream to be busy (writes %v)", publishing, writes)
	case n.heldBack() == held:
		t.Errorf("events to a stream written %v ago were not held back (BatchDelay %v)", publishing, delay)
	case writes != 1:
		t.Errorf("four events within the batch delay took %v writes, want 1", writes)
	case time.Since(quiet) < delay:
		// A lower bound only: held back means written no sooner than
		// BatchDelay after the previous write, which came after quiet.
		t.Errorf("held-back events arrived %v after the previous event was published, before the batch delay %v", time.Since(quiet), delay)
	}

	// Quiet again: at once.
	time.Sleep(delay + 100*time.Millisecond)
	held = n.heldBack()
	n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(5), oid(6))))
	s.events(t, 1)
	if got := n.heldBack(); got != held {
		t.Fatalf("an event to a stream quiet again was held back")
	}
}
