package fanout

import (
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

// TestHandOffManySubscribersUnderLock: a batch whose first event queues to
// more than 4,096 subscribers and whose last event, to another repo's, is
// handed off in chunks while the engine's lock is held, completes: that
// hand-off must not take the lock itself (shrinking the list asks for the
// stream count, which does).
func TestHandOffManySubscribersUnderLock(t *testing.T) {
	t.Parallel()
	h := testHub(t, 1, nil)
	for range 5000 {
		handlerSub(t, h, false, []string{"acme/app"})
	}
	for range 300 {
		handlerSub(t, h, false, []string{"acme/lib"})
	}
	evs := []bus.Event{
		{V: 1, Repo: "acme/app", Ref: "refs/heads/a", New: oid(1), Kind: bus.KindCreate, Seq: 1},
		{V: 1, Repo: "acme/lib", Ref: "refs/heads/b", New: oid(2), Kind: bus.KindCreate, Seq: 2},
	}
	done := make(chan struct{})
	go func() {
		h.handle(bus.Message{Events: evs}, true, time.Now())
		h.flushScheduled()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(patience):
		t.Fatal("dispatch did not finish: deadlocked on the engine's lock")
	}
}
