package server

import (
	"testing"
	"time"

	"github.com/refcast/refcast/bus/memory"
)

// TestBusMessageIsOneWrite: the events of one bus message (here one push
// of five refs) are all queued before a writer sees the subscriber, so an
// idle stream gets them in one write even with batching off.
func TestBusMessageIsOneWrite(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) { o.BatchDelay = -1 })
	s := n.subscribe(t, query("repo", "acme/app"), nil)
	s.opening()
	before := n.metric(t, "refcast_stream_writes_total")
	var ups = make([]string, 5)
	p := newPush("acme/app")
	for i := range ups {
		ups[i] = "refs/heads/b" + string(rune('a'+i))
		p.Updates = append(p.Updates, upd(ups[i], z, oid(i+1)))
	}
	n.publish(t, p)
	evs, _ := s.events(5, 5*time.Second)
	if got := refsOf(evs); len(got) != 5 {
		t.Fatalf("got %v", got)
	}
	if got := n.metric(t, "refcast_stream_writes_total") - before; got != 1 {
		t.Fatalf("five events of one push took %v writes, want 1", got)
	}
}

// TestBatchDelay: a stream that was written recently gets the events that
// follow together, once BatchDelay has passed, in one write; a stream that
// has been quiet for BatchDelay gets an event at once.
func TestBatchDelay(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) { o.BatchDelay = delay })
	s := n.subscribe(t, query("repo", "acme/app"), nil)
	s.opening()
	time.Sleep(delay + 50*time.Millisecond) // the opening frames were a write

	// Quiet stream: at once.
	start := time.Now()
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1))))
	s.events(1, 5*time.Second)
	if took := time.Since(start); took >= delay/2 {
		t.Fatalf("an event to a quiet stream took %v; batching must not delay it (BatchDelay %v)", took, delay)
	}

	// Busy stream: the next events wait for the rest of the window and
	// share one write.
	before := n.metric(t, "refcast_stream_writes_total")
	start = time.Now()
	for i := 2; i <= 5; i++ {
		n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(i-1), oid(i))))
	}
	evs, _ := s.events(4, 5*time.Second)
	took := time.Since(start)
	if len(evs) != 4 || evs[3].New != oid(5) {
		t.Fatalf("got %+v", evs)
	}
	if took < delay-50*time.Millisecond {
		t.Errorf("events to a busy stream arrived after %v, before the batch delay %v", took, delay)
	}
	if got := n.metric(t, "refcast_stream_writes_total") - before; got != 1 {
		t.Errorf("four events within the batch delay took %v writes, want 1", got)
	}

	// Quiet again: at once.
	time.Sleep(delay + 50*time.Millisecond)
	start = time.Now()
	n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(5), oid(6))))
	s.events(1, 5*time.Second)
	if took := time.Since(start); took >= delay/2 {
		t.Fatalf("an event to a stream quiet again took %v", took)
	}
}
