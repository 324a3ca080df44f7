package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/bus"
)

// Subscribe implements bus.Bus. The subscription runs one goroutine per
// partition, each tailing its stream with XREAD BLOCK (Options.Block) from
// the last seq it delivered; each holds one pooled connection while it
// blocks. The stream is the buffer: a slow reader only delays the XREADs.
//
// A tailer never skips: on a Redis error it backs off and reads again from
// its position. It sends a Reset, and continues from the partition's current
// head, when the history it needs is gone: the epoch differs (Redis lost its
// data), the next seq was trimmed, or the partition is behind the position
// or holds other events at it (a restart lost acknowledged writes).
//
// Each failed read is reported on the feed as a Message with Err, and the
// first successful read after a run of them as an empty Message, so the
// node can tell the feed is down although the subscription stays open.
func (b *Bus) Subscribe(ctx context.Context, from bus.Heads) (bus.Subscription, error) {
	if len(from) != len(b.parts) {
		return nil, fmt.Errorf("%w: subscribe from %d partitions, bus has %d", bus.ErrInvalid, len(from), len(b.parts))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	s := &subscription{c: make(chan bus.Message), cancel: cancel, done: make(chan struct{}),
		outage: outage{log: b.log, failing: make([]bool, len(b.parts))}}
	b.subs.Add(1)
	var wg sync.WaitGroup
	for pi := range b.parts {
		// A Chain in from is the chain at Last (bus.Bus), checked by the
		// first check; 0 is learnt there.
		t := &tailer{b: b, s: s, pi: pi, at: from[pi]}
		wg.Go(func() { t.run(ctx) })
	}
	go func() { // owned by the subscription: ends when every tailer has
		wg.Wait()
		stop()
		cancel()
		close(s.c)
		close(s.done)
		b.subs.Done()
	}()
	return s, nil
}

type subscription struct {
	c      chan bus.Message   // closed when every tailer has returned
	cancel context.CancelFunc // stops the tailers
	done   chan struct{}      // closed after c
	outage outage             // shared by the tailers
}

func (s *subscription) C() <-chan bus.Message { return s.c }

// Close stops the tailers and waits for them: at most about Options.Block,
// the time an XREAD in flight takes to return. Safe to call twice.
func (s *subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// tailer follows one partition. All its fields are owned by its goroutine.
type tailer struct {
	b  *Bus
	s  *subscription
	pi int
	at bus.PartitionHead // Epoch and Last: the position delivered up to
	// lastPush is the push id of the event at at.Last ("" when unknown: it
	// was trimmed before this tailer saw it), to recognise that what Redis
	// holds after at.Last continues what was delivered; at.Chain is the
	// chain there (0: unknown).
	lastPush string
	failures int // consecutive errors, for backoff and logging
}

func (t *tailer) run(ctx context.Context) {
	check := true // verify the position against the partition's head first
	for ctx.Err() == nil {
		if check {
			if err := t.check(ctx); err != nil {
				if !t.fail(ctx, "check head", err) {
					return
				}
				continue
			}
			check = false
		}
		res, err := t.b.rdb.XRead(ctx, &goredis.XReadArgs{
			Streams: []string{t.b.parts[t.pi].stream, strconv.FormatUint(t.at.Last, 10)},
			Count:   DefaultFeedBatch,
			Block:   t.b.opts.Block,
		}).Result()
		switch {
		case errors.Is(err, goredis.Nil): // nothing new within Block: re-check the epoch
			check = true
			continue
		case err != nil:
			if !t.fail(ctx, "xread", err) {
				return
			}
			check = true
			continue
		}
		if !t.recovered(ctx) {
			return
		}
		if len(res) == 0 || len(res[0].Messages) == 0 {
			continue
		}
		msg, ok := t.decode(res[0].Messages)
		if !ok { // another epoch's entries, or a gap: the history we need is gone
			if err := t.reset(ctx); err != nil {
				if !t.fail(ctx, "reset", err) {
					return
				}
				check = true
			}
			continue
		}
		if !t.send(ctx, msg) {
			return
		}
		last := msg.Events[len(msg.Events)-1]
		t.at.Last, t.lastPush, t.at.Chain = last.Seq, last.PushID, last.Chain
	}
}

// decode turns stream entries into a message, reporting false unless they
// are of the tailed epoch and continue the position without a gap: dense
// seqs, each entry naming as its predecessor the push delivered before it.
// The last check matters after a restart that lost acknowledged writes: the
// epoch is the same and new pushes reuse the lost seqs. Where both are
// known, the entry's chain must continue the delivered one too (it also
// covers a retried push that lands at its old seq again).
func (t *tailer) decode(msgs []goredis.XMessage) (bus.Message, bool) {
	epoch := strconv.FormatUint(t.at.Epoch, 10)
	evs := make([]bus.Event, 0, len(msgs))
	prev, chain := t.lastPush, t.at.Chain
	for i, m := range msgs {
		data, _ := m.Values["e"].(string)
		if p, _ := m.Values["p"].(string); p != epoch {
			return bus.Message{}, false
		}
		if v, _ := m.Values["v"].(string); prev != "" && v != prev {
			return bus.Message{}, false
		}
		c, ok := m.Values["c"].(string)
		if !ok {
			c = "?"
		}
		ev, err := decodeEvent(t.pi, m.ID, data, c)
		if err != nil || ev.Seq != t.at.Last+1+uint64(i) {
			if err != nil {
				t.b.log.Error("redis bus: undecodable stream entry", "partition", t.pi, "id", m.ID, "err", err)
			}
			return bus.Message{}, false
		}
		if chain != 0 && ev.Prev != 0 && ev.Prev != chain {
			return bus.Message{}, false
		}
		prev, chain = ev.PushID, ev.Chain
		evs = append(evs, ev)
	}
	return bus.Message{Partition: t.pi, Events: evs}, true
}

// check compares the position with the partition's head and resets when
// the history no longer continues it.
func (t *tailer) check(ctx context.Context) error {
	head, probe, err := t.b.head(ctx, t.pi, t.at.Last)
	if err != nil {
		return err
	}
	lost := head.Epoch != t.at.Epoch || t.at.Last+1 < head.First || t.at.Last > head.Last
	if !lost && t.at.Last == head.Last && t.at.Chain != 0 && head.Chain != 0 {
		lost = head.Chain != t.at.Chain
	}
	if !lost && probe.ok {
		switch {
		case probe.bad:
			lost = true
		case t.at.Chain != 0 && probe.ev.Chain != 0 && probe.ev.Chain != t.at.Chain:
			// Another push at the Seq delivered last: a rewind under the
			// same epoch, seen by a tailer that knows the chain there
			// but not yet the push (a resubscription).
			lost = true
		case t.lastPush == "":
			// the baseline the next entries must continue
			t.lastPush = probe.ev.PushID
			if t.at.Chain == 0 {
				t.at.Chain = probe.ev.Chain
			}
		case probe.ev.PushID != t.lastPush:
			lost = true
		}
	}
	if lost {
		return t.deliverReset(ctx, head)
	}
	if !t.recovered(ctx) {
		return ctx.Err()
	}
	return nil
}

func (t *tailer) reset(ctx context.Context) error {
	head, _, err := t.b.head(ctx, t.pi, 0)
	if err != nil {
		return err
	}
	return t.deliverReset(ctx, head)
}

func (t *tailer) deliverReset(ctx context.Context, head bus.PartitionHead) error {
	t.b.log.Warn("redis bus: partition history lost, resetting subscription",
		"partition", t.pi, "epoch", t.at.Epoch, "seq", t.at.Last, "new_epoch", head.Epoch, "new_seq", head.Last)
	if !t.send(ctx, bus.Message{Partition: t.pi, Reset: true, Head: head}) {
		return ctx.Err()
	}
	t.at, t.lastPush = head, ""
	return nil
}

func (t *tailer) send(ctx context.Context, m bus.Message) bool {
	select {
	case t.s.c <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// fail logs the first of a run of errors, reports the error on the feed
// (a Message with Err), and sleeps a jittered, exponentially growing
// backoff (50ms to 2s) before the next attempt. It reports false when ctx
// ended.
func (t *tailer) fail(ctx context.Context, op string, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	t.failures++
	if t.failures == 1 {
		t.s.outage.fail(t.pi, op, err)
	}
	if !t.send(ctx, bus.Message{Partition: t.pi, Err: fmt.Errorf("redis bus: partition %d: %s: %w", t.pi, op, err)}) {
		return false
	}
	d := min(50*time.Millisecond<<min(t.failures-1, 6), 2*time.Second)
	d = d/2 + rand.N(d/2+1)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// recovered ends a run of errors: the outage tracker logs the recovery
// once for all partitions, and the feed gets an empty Message saying the
// partition reads again. It reports false when ctx ended.
func (t *tailer) recovered(ctx context.Context) bool {
	if t.failures == 0 {
		return true
	}
	t.s.outage.recovered(t.pi)
	t.failures = 0
	return t.send(ctx, bus.Message{Partition: t.pi})
}

// outage turns the tailers' errors into one line when Redis goes away and
// one when it is back, instead of one per partition (16 by default) per
// outage. It is plain state under a mutex, driven by the tailers: no
// goroutine of its own. Its memory is one bool per partition.
type outage struct {
	log      *slog.Logger
	mu       sync.Mutex
	failing  []bool    // by partition: in a run of errors
	down     int       // partitions failing now
	affected int       // distinct partitions that failed during this outage
	since    time.Time // first error of this outage
}

// fail records the first error of a partition's run of errors; the first
// partition to fail opens the outage and logs it.
func (o *outage) fail(pi int, op string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failing[pi] {
		return
	}
	o.failing[pi] = true
	o.down++
	o.affected++
	if o.down == 1 && o.affected == 1 {
		o.since = time.Now()
		o.log.Warn("redis bus: unavailable, retrying", "partitions", len(o.failing), "op", op, "err", err)
	}
}

// recovered records a partition reading again; the last one to recover
// closes the outage and logs how many partitions it affected and for how long.
func (o *outage) recovered(pi int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.failing[pi] {
		return
	}
	o.failing[pi] = false
	o.down--
	if o.down == 0 {
		o.log.Info("redis bus: back", "partitions", o.affected, "outage", time.Since(o.since).Round(time.Millisecond))
		o.affected = 0
	}
}
