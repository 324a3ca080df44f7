package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/internal/redistest"
)

// publishRetrying publishes like a hook: until it succeeds, with the same
// push id, retrying only ErrUnavailable.
func publishRetrying(ctx context.Context, t *testing.T, b bus.Bus, p *bus.Push) []bus.Event {
	for {
		evs, err := b.Publish(ctx, p)
		if err == nil {
			return evs
		}
		if !errors.Is(err, bus.ErrUnavailable) || ctx.Err() != nil {
			t.Errorf("publish %s: %v", p.ID, err)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receiver reads a subscription in the background, recording events and
// resets per partition.
type receiver struct {
	mu     sync.Mutex
	events []bus.Event
	resets []bus.Message
	done   chan struct{}
}

// followFromNow subscribes to b from its current heads, which it returns,
// and receives in the background.
func followFromNow(ctx context.Context, t *testing.T, b bus.Bus) (bus.Heads, bus.Subscription, *receiver) {
	t.Helper()
	from, err := b.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	return from, sub, receive(sub)
}

func receive(sub bus.Subscription) *receiver {
	r := &receiver{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for m := range sub.C() {
			r.mu.Lock()
			if m.Reset {
				r.resets = append(r.resets, m)
			}
			r.events = append(r.events, m.Events...)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *receiver) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(bustest.Wait)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		got := len(r.events)
		r.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Fatalf("received %d of %d events within %v", len(r.events), n, bustest.Wait)
}

// waitReset waits for the first Reset, failing with msg if none comes
// within bustest.Wait.
func (r *receiver) waitReset(t *testing.T, msg string) {
	t.Helper()
	deadline := time.Now().Add(bustest.Wait)
	for {
		r.mu.Lock()
		n := len(r.resets)
		r.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exactlyOnce checks the received events are dense from 1 per partition,
// without reset, and carry every published push exactly once.
func (r *receiver) exactlyOnce(t *testing.T, pushes int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.resets) > 0 {
		t.Errorf("got resets %+v", r.resets)
	}
	next := map[int]uint64{}
	seen := map[string]int{}
	for _, e := range r.events {
		if e.Seq != next[e.Partition]+1 {
			t.Fatalf("partition %d: seq %d after %d", e.Partition, e.Seq, next[e.Partition])
		}
		next[e.Partition] = e.Seq
		seen[e.PushID]++
	}
	for i := range pushes {
		if id := fmt.Sprintf("p%d", i); seen[id] != 1 {
			t.Errorf("push %s received %d times", id, seen[id])
		}
	}
	if len(r.events) != pushes {
		t.Errorf("received %d events for %d pushes", len(r.events), pushes)
	}
}

// TestKillRestartWithAOF: Redis is killed and restarted (AOF, fsync always)
// while a publisher keeps publishing; the subscription sees every event
// exactly once and no reset.
func TestKillRestartWithAOF(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{AOF: true})
	b := open(t, srv.URL(), redis.Options{Partitions: 4, Timeout: 500 * time.Millisecond})
	ctx := t.Context()
	_, sub, r := followFromNow(ctx, t, b)

	const pushes = 150
	published := make(chan int, pushes)
	go func() {
		for i := range pushes {
			publishRetrying(ctx, t, b, bustest.Push(fmt.Sprintf("p%d", i), fmt.Sprintf("acme/r%d", i%7), "refs/heads/main", bustest.ID(i+1)))
			published <- i
		}
		close(published)
	}()
	for i := range published {
		if i == 40 || i == 100 {
			srv.Kill()
			time.Sleep(100 * time.Millisecond)
			srv.Restart()
		}
	}
	r.waitFor(t, pushes)
	time.Sleep(100 * time.Millisecond) // room for a duplicate to show up
	sub.Close()
	<-r.done
	r.exactlyOnce(t, pushes)

	// Idempotency survived the restarts: republishing returns the original
	// positions and appends nothing.
	heads, _ := b.Heads(ctx)
	evs, err := b.Publish(ctx, bustest.Push("p0", "acme/r0", "refs/heads/main", bustest.ID(1)))
	if err != nil || evs[0].Seq != 1 {
		t.Errorf("republish p0 = %v, %v; want its original seq 1", evs, err)
	}
	if after, _ := b.Heads(ctx); !slices.Equal(after, heads) {
		t.Errorf("republish appended: heads %v -> %v", heads, after)
	}
}

// TestRestartWithoutPersistenceResets: a restart that loses the data gives
// a Reset, never a silent gap, even when the new history has already grown
// past the old position by the time the subscriber reconnects.
func TestRestartWithoutPersistenceResets(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{AOF: false})
	b := open(t, srv.URL(), redis.Options{Partitions: 1, Timeout: 500 * time.Millisecond})
	ctx := t.Context()
	from, sub, r := followFromNow(ctx, t, b)
	for i := range 5 {
		publishRetrying(ctx, t, b, bustest.Push(fmt.Sprintf("old%d", i), "acme/app", "refs/heads/main", bustest.ID(i+1)))
	}
	r.waitFor(t, 5)

	srv.Restart() // kill -9, no AOF: everything is gone
	for i := range 10 {
		publishRetrying(ctx, t, b, bustest.Push(fmt.Sprintf("new%d", i), "acme/app", "refs/heads/main", bustest.ID(i+100)))
	}
	heads, err := b.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if heads[0].Epoch == from[0].Epoch {
		t.Fatal("epoch unchanged after losing the data")
	}
	r.waitReset(t, "no reset after the history was lost")
	sub.Close()
	<-r.done
	// Before the reset: exactly the old events; after it: only events past
	// the reset's head, in the new epoch.
	reset := r.resets[0]
	if reset.Head.Epoch != heads[0].Epoch {
		t.Errorf("reset to epoch %d, want %d", reset.Head.Epoch, heads[0].Epoch)
	}
	for i, e := range r.events {
		if i < 5 && e.PushID != fmt.Sprintf("old%d", i) {
			t.Errorf("event %d = %s, want old%d", i, e.PushID, i)
		}
		if i >= 5 && e.Seq <= reset.Head.Last {
			t.Errorf("event %d/%d of the new epoch delivered at or before the reset head %d", e.Partition, e.Seq, reset.Head.Last)
		}
	}
}

// TestFlushAllResets: FLUSHALL under a live subscription gives a Reset.
func TestFlushAllResets(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	b := open(t, srv.URL(), redis.Options{Partitions: 2})
	ctx := t.Context()
	if _, err := b.Publish(ctx, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))); err != nil {
		t.Fatal(err)
	}
	from, _ := b.Heads(ctx)
	sub, err := b.Subscribe(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := srv.Client().FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.C():
		if !m.Reset {
			t.Errorf("got %+v, want a reset", m)
		}
	case <-time.After(bustest.Wait):
		t.Fatal("no reset after FLUSHALL")
	}
}

// TestClientKillMidStream: every client connection is killed repeatedly
// while events flow; nothing is lost or duplicated.
func TestClientKillMidStream(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	b := open(t, srv.URL(), redis.Options{Partitions: 4, Timeout: 500 * time.Millisecond})
	ctx := t.Context()
	_, sub, r := followFromNow(ctx, t, b)
	admin := srv.Client()
	const pushes = 200
	stop := make(chan struct{})
	killed := make(chan int)
	go func() {
		n := 0
		defer func() { killed <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
				if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err == nil {
					n++
				}
			}
		}
	}()
	for i := range pushes {
		publishRetrying(ctx, t, b, bustest.Push(fmt.Sprintf("p%d", i), fmt.Sprintf("acme/r%d", i%9), "refs/heads/main", bustest.ID(i+1)))
		if i%20 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stop)
	if n := <-killed; n == 0 {
		t.Error("no CLIENT KILL ran")
	}
	r.waitFor(t, pushes)
	time.Sleep(100 * time.Millisecond)
	sub.Close()
	<-r.done
	r.exactlyOnce(t, pushes)
}

// TestSlowReader: a reader that does not read holds nothing in memory and
// loses nothing: the stream is the buffer.
func TestSlowReader(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	b := open(t, srv.URL(), redis.Options{Partitions: 1})
	ctx := t.Context()
	from, _ := b.Heads(ctx)
	sub, err := b.Subscribe(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	const pushes = 600 // more than one feed batch
	for i := range pushes {
		if _, err := b.Publish(ctx, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // the reader stalls
	r := receive(sub)
	r.waitFor(t, pushes)
	sub.Close()
	<-r.done
	r.exactlyOnce(t, pushes)
}

// TestLostTailResets: Redis comes back with the same epoch but without its
// last writes (AOF with appendfsync everysec after a crash), and new pushes
// reuse the seqs the subscriber already saw. The subscriber notices on
// reconnecting (its connection broke) and resets instead of skipping.
func TestLostTailResets(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	prefix := uniquePrefix()
	b := open(t, srv.URL(), redis.Options{Prefix: prefix, Partitions: 1})
	ctx := t.Context()
	from, _ := b.Heads(ctx)
	sub, err := b.Subscribe(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	r := receive(sub)
	for i := range 5 {
		publishRetrying(ctx, t, b, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i+1)))
	}
	r.waitFor(t, 5)
	admin := srv.Client()
	// Lose the history but keep the epoch: new pushes get seqs 1, 2, ...
	if err := admin.Del(ctx, prefix+":{p0}:stream", prefix+":{p0}:seq").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		publishRetrying(ctx, t, b, bustest.Push(fmt.Sprintf("q%d", i), "acme/app", "refs/heads/main", bustest.ID(i+50)))
	}
	admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	for i := 3; i < 7; i++ {
		publishRetrying(ctx, t, b, bustest.Push(fmt.Sprintf("q%d", i), "acme/app", "refs/heads/main", bustest.ID(i+50)))
	}
	r.waitReset(t, "no reset after the tail of the history was lost")
	sub.Close()
	<-r.done
	for _, e := range r.events[:5] {
		if e.PushID[0] != 'p' {
			t.Errorf("event %d is %s before the reset", e.Seq, e.PushID)
		}
	}
	for _, e := range r.events[5:] {
		if e.Seq <= r.resets[0].Head.Last {
			t.Errorf("event %d (%s) delivered at or before the reset head %d", e.Seq, e.PushID, r.resets[0].Head.Last)
		}
	}
}

// TestSubscribeAtAnotherChainResets: a subscription from a position
// whose chain is not the history's at its Seq (a subscriber that saw
// pushes the store then lost, under the same epoch, with new pushes on
// their Seqs: a failover to a lagging replica, then a resubscription)
// gets a reset, whether or not more pushes follow. The tailer took the
// entry at that Seq as its baseline before, and an engine resubscribing
// after a failover delivered the new pushes past the lost ones
// (server's TestRewindSentinelFailover, once in about 25 runs).
func TestSubscribeAtAnotherChainResets(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	b := open(t, srv.URL(), redis.Options{Prefix: uniquePrefix(), Partitions: 1})
	ctx := t.Context()
	for i := range 3 {
		publishRetrying(ctx, t, b, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i+1)))
	}
	from, err := b.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if from[0].Chain == 0 {
		t.Fatal("the head has no chain")
	}
	from[0].Chain ^= 1 // the pushes it saw at these Seqs were others
	sub, err := b.Subscribe(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	r := receive(sub)
	r.waitReset(t, "no reset for a position whose chain is not the history's")
	sub.Close()
	<-r.done
	if len(r.events) != 0 {
		t.Errorf("delivered %d events past a position the history does not continue", len(r.events))
	}
}

// TestNoReplicasIsUnavailable: a primary configured with
// min-replicas-to-write refuses writes with NOREPLICAS while too few
// replicas are in sync: a passing state (a replica reconnecting), so a
// publish fails as ErrUnavailable (the hook spools and retries, the node
// answers 503), not as a refusal of the push; and it goes through once the
// condition is lifted.
func TestNoReplicasIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	b := open(t, srv.URL(), redis.Options{Partitions: 2})
	ctx := t.Context()
	if err := srv.Client().ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := b.Publish(ctx, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1)))
	if !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("publish with no replica in sync: err = %v, want ErrUnavailable", err)
	}
	if err := srv.Client().ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))); err != nil {
		t.Fatalf("publish once writes are allowed again: %v", err)
	}
}
