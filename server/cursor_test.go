package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
)

// countingBus counts Heads and History calls on a real bus.
type countingBus struct {
	bus.Bus
	reads atomic.Int64
}

func (b *countingBus) Heads(ctx context.Context) (bus.Heads, error) {
	b.reads.Add(1)
	return b.Bus.Heads(ctx)
}

func (b *countingBus) History(ctx context.Context, pi int, epoch, after uint64, limit int) ([]bus.Event, error) {
	b.reads.Add(1)
	return b.Bus.History(ctx, pi, epoch, after, limit)
}

// TestCurrentCursorCostsNoBusRead: a client resuming with a cursor that is
// the node's position has nothing to replay and the node does not read the
// bus for it (a fleet reconnecting after a drain must not hammer Redis);
// an older cursor is checked against the bus and replayed.
func TestCurrentCursorCostsNoBusRead(t *testing.T) {
	t.Parallel()
	b := &countingBus{Bus: newBus(t, memory.Options{})}
	n := startNode(t, b, 50*time.Millisecond, nil)
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1))))
	s := n.subscribe(t, query("repo", "acme/app"), nil)
	_, hello := s.opening()
	s.close()

	before := b.reads.Load()
	again := n.subscribe(t, query("repo", "acme/app", "since", hello.ID), nil)
	if _, h := again.opening(); h.ID != hello.ID {
		t.Fatalf("hello %s after resuming at the current cursor %s", h.ID, hello.ID)
	}
	if got := b.reads.Load() - before; got != 0 {
		t.Fatalf("resuming at the current cursor read the bus %d times", got)
	}
	if got := n.metric(t, "refcast_replays_total"); got != 1 {
		t.Errorf("refcast_replays_total = %v, want 1 (an up-to-date resume counts)", got)
	}

	// A cursor one event behind: checked and replayed.
	n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(1), oid(2))))
	again.events(1, 5*time.Second)
	again.close()
	before = b.reads.Load()
	old := n.subscribe(t, query("repo", "acme/app", "since", hello.ID), nil)
	between, _ := old.opening()
	if len(between) != 1 || decodeEvent(t, between[0]).New != oid(2) {
		t.Fatalf("replayed %+v, want the one event after the cursor", between)
	}
	if b.reads.Load() == before {
		t.Error("an older cursor was replayed without reading the bus")
	}
}
