package server

import (
	"testing"
	"time"

	"github.com/refcast/refcast/bus/memory"
)

// TestLatestModeLargePush: a mode=latest client that is behind when one
// push of 3,000 distinct refs arrives is not evicted (its queue cannot
// fold distinct refs, and one push must never cost a client its stream),
// and then receives every ref's state.
func TestLatestModeLargePush(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) {
		o.MaxQueue = 16
		o.WriteTimeout = time.Hour // about queues, never evicted for slowness (publishing can take 20 s under load)
		o.MaxBody = 16 << 20
	})
	q := query("repo", "acme/app", "mode", "latest")
	conn := n.dialStalled(t, q)
	eventually(t, 5*time.Second, "the stream", func() bool { return n.metric(t, "refcast_connections") == 1 })

	const refs = 3000 // ~7 MB of frames: more than the socket buffers hold
	n.publish(t, bigPush("acme/app", 0, refs, func(int) string { return z }, func(i int) string { return oid(i + 1) }))
	eventually(t, 10*time.Second, "the push to be queued", func() bool { return n.metric(t, "refcast_deliveries_total") == refs })
	if ev := n.metric(t, "refcast_evictions_total"); ev != 0 {
		t.Fatalf("mode=latest client evicted by one push (%v)", ev)
	}

	s := startSSEOnConn(t, conn, q)
	s.opening()
	got := map[string]string{}
	deadline := time.Now().Add(patience)
	for len(got) < refs {
		if time.Now().After(deadline) {
			t.Fatalf("the client holds %d of %d refs", len(got), refs)
		}
		ev := decodeEvent(t, s.nextNonHB(time.Until(deadline)))
		if _, dup := got[ev.Ref]; dup {
			t.Fatalf("%s delivered twice", ev.Ref)
		}
		got[ev.Ref] = ev.New
	}
	if ev := n.metric(t, "refcast_evictions_total"); ev != 0 {
		t.Fatalf("mode=latest client evicted (%v)", ev)
	}
}
