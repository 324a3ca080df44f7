package fanout

import (
	"testing"
	"time"
)

// TestLatestModeLargePush: a mode=latest client that is behind when one
// push of 3,000 distinct refs arrives is not evicted (its queue cannot
// fold distinct refs, and one push must never cost a client its stream),
// and then receives every ref's state.
func TestLatestModeLargePush(t *testing.T) {
	t.Parallel()
	n := runEngine(t, func(o *Options) {
		o.MaxQueue = 16
		o.WriteTimeout = time.Hour // about queues, never evicted for slowness (publishing can take 20 s under load)
	})
	s := n.stream(t, Spec{Latest: true}, "acme/app") // not read until the push is queued

	const refs = 3000 // ~7 MB of frames: more than the socket buffers hold
	n.publish(t, bigPush("acme/app", 0, refs, func(int) string { return z }, func(i int) string { return oid(i + 1) }))
	eventually(t, 10*time.Second, "the push to be queued", func() bool { return n.m.Deliveries.(*counter).value() == refs })
	if ev := n.evictions.value(); ev != 0 {
		t.Fatalf("mode=latest client evicted by one push (%v)", ev)
	}

	got := map[string]string{}
	_ = s.conn.SetReadDeadline(time.Now().Add(patience))
	for len(got) < refs {
		ev := s.next(t)
		if _, dup := got[ev.Ref]; dup {
			t.Fatalf("%s delivered twice", ev.Ref)
		}
		got[ev.Ref] = ev.New
	}
	if ev := n.evictions.value(); ev != 0 {
		t.Fatalf("mode=latest client evicted (%v)", ev)
	}
}
