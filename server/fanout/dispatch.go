package fanout

import (
	"context"
	"github.com/refcast/refcast/wire"
	"runtime"
	"time"

	"github.com/refcast/refcast/bus"
)

// Dispatch: the bus reader queues each event's frame to the subscribers it
// concerns, then hands them to the writer pool, at once or (a busy
// connection) through the batcher.

// maxDispatchBatch bounds the events queued before the subscribers they
// concern are handed to writers, within one message as across messages.
const maxDispatchBatch = 256

// handOffChunk is how many subscribers of the last event of a batch are
// collected before they are handed to writers.
const handOffChunk = 256

// handle queues a bus message's events, or carries out a reset. last: the
// message ends the batch; read: when the engine read it from the feed.
func (e *Engine) handle(msg bus.Message, last bool, read time.Time) {
	if msg.Reset {
		e.flushScheduled()
		if e.globCh != nil {
			e.globBarrier(e.runCtx)
		}
		e.reset(msg)
		return
	}
	for i := range msg.Events {
		e.queueEvent(&msg.Events[i], last && i == len(msg.Events)-1, read)
		if (i+1)%maxDispatchBatch == 0 && i+1 < len(msg.Events) {
			// A large push is written while it is still being queued, so
			// queues stay near their bound and mode=latest streams do
			// not fold (or get evicted) for lack of a writer.
			e.flushScheduled()
		}
	}
}

// flushScheduled hands the subscribers queued to by queueEvent to the
// writers (handOff). Called by the bus reader only, without e.mu.
func (e *Engine) flushScheduled() {
	e.handOff()
	e.toSchedule = e.shrinkSchedule(e.toSchedule)
}

// shrinkSchedule drops a large, emptied hand-off list once the crowd that
// grew it has left. It takes e.mu (Count): never call it with e.mu held.
func (e *Engine) shrinkSchedule(toSchedule []*subscriber) []*subscriber {
	if cap(toSchedule) > 4096 && e.Count() < cap(toSchedule)/4 {
		return nil
	}
	return toSchedule
}

// handOff hands the subscribers in toSchedule to the writers (handOffList).
// Called by the bus reader only; it never blocks, so it may hold e.mu.
func (e *Engine) handOff() { e.toSchedule = e.handOffList(e.toSchedule) }

// handOffList hands a list of subscribers (the bus reader's, or the glob
// stage's) to the writers and returns it emptied: at once if the
// connection has not been written for BatchDelay, else (a busy
// connection) through the batcher, so its events share a write. It never
// blocks and takes no lock of the engine's but laterMu, so it may be
// called with e.mu held.
func (e *Engine) handOffList(toSchedule []*subscriber) []*subscriber {
	if e.opts.BatchDelay > 0 && len(toSchedule) > 0 {
		recent := time.Now().Add(-e.opts.BatchDelay).UnixNano()
		kept := toSchedule[:0]
		ring := false
		e.laterMu.Lock()
		for _, s := range toSchedule {
			if s.conn != nil && s.lastWrite.Load() > recent && !s.queueHalfFull(e.opts.MaxQueue) {
				ring = ring || len(e.later) == 0
				e.later = append(e.later, s)
				e.heldBack++
			} else {
				kept = append(kept, s)
			}
		}
		e.laterMu.Unlock()
		clear(toSchedule[len(kept):])
		toSchedule = kept
		if ring {
			select {
			case e.laterBell <- struct{}{}:
			default:
			}
		}
	}
	for i, s := range toSchedule {
		e.schedule(s)
		toSchedule[i] = nil
	}
	return toSchedule[:0]
}

// batcher hands busy subscribers to the writers BatchDelay after the first
// of them was set aside, with every event that arrived for them meanwhile.
// It has no timer while nothing waits.
func (e *Engine) batcher(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.laterBell:
		}
		// Wait until BatchDelay has passed since the first waiting
		// stream's last write; the others set aside meanwhile go along.
		wait := e.opts.BatchDelay
		e.laterMu.Lock()
		if len(e.later) > 0 {
			last := time.Unix(0, e.later[0].lastWrite.Load())
			wait = min(max(time.Until(last.Add(e.opts.BatchDelay)), 0), e.opts.BatchDelay)
		}
		e.laterMu.Unlock()
		t.Reset(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		e.laterMu.Lock()
		subs := e.later
		e.later = e.laterSpare[:0]
		e.laterMu.Unlock()
		for _, s := range subs {
			e.schedule(s)
		}
		clear(subs)
		e.laterMu.Lock()
		e.laterSpare = subs[:0]
		if cap(e.laterSpare) > 4096 && cap(e.laterSpare) > 4*len(e.later) {
			e.laterSpare = nil // do not keep a large array after the crowd left
		}
		e.laterMu.Unlock()
	}
}

// queueEvent encodes an event once and queues it for every matching
// subscriber; the subscribers that need a writer are collected in
// toSchedule for flushScheduled, or handed off every handOffChunk when
// last (no event follows in this batch). read is when the engine read the
// event from the feed. Called by the bus reader only.
func (e *Engine) queueEvent(ev *bus.Event, last bool, read time.Time) {
	e.metrics.EventsIn.Inc()
	var evict []eviction
	e.mu.Lock()
	if ev.Seq <= e.pos.Seqs[ev.Partition] {
		e.mu.Unlock() // already seen (a resubscription overlapping)
		return
	}
	e.moveTo(ev.Partition, ev.Seq, ev.Chain)
	pos := append([]uint64(nil), e.pos.Seqs...)
	checks := append([]uint32(nil), e.pos.Checks...)
	f := newEventFrame(wire.AppendEventFrame(make([]byte, 0, 512), wire.EventName(ev), wire.Cursor{Epoch: e.pos.Epoch, Seqs: pos, Checks: checks}, ev), ev, pos, checks, e.pos.Epoch)
	n := 0
	// Subscribers with the same filter share one interned filter: its ref
	// match is computed once per event and remembered in it (stamp).
	e.matchStamp++
	stamp := e.matchStamp
	deliver := func(s *subscriber) {
		sf := s.shared
		if sf.stamp != stamp {
			sf.stamp, sf.match = stamp, s.filter.MatchEventRef(ev)
		}
		if !sf.match {
			return
		}
		n++
		reason, schedule := s.add(f, e.opts.MaxQueue)
		if reason != "" {
			evict = append(evict, eviction{s, reason})
		}
		if schedule {
			e.toSchedule = append(e.toSchedule, s)
			if last && len(e.toSchedule) >= handOffChunk {
				e.handOff()
			}
		}
	}
	for s := range e.exact[ev.Repo] {
		deliver(s) // the index matched the repo
	}
	globs := len(e.globs) > 0
	e.mu.Unlock()
	e.metrics.Deliveries.Add(float64(n))
	if !globs { // else the glob stage observes it, once it is done
		e.metrics.FanoutLatency.Observe(time.Since(read).Seconds())
	}
	if !ev.Time.IsZero() {
		// Clocks of the hook's and the node's hosts may differ: an event
		// from the future is 0 s old rather than a negative sample.
		e.metrics.PublishAge.Observe(max(read.Sub(ev.Time).Seconds(), 0))
	}
	e.evict(evict)
	if globs {
		w := globWork{ev: ev, f: f, read: read}
		if e.globCh != nil {
			e.sendGlobs(e.runCtx, w)
		} else {
			// No glob stage (Run not started: tests that dispatch by
			// hand): match them here, in order all the same.
			e.toSchedule = e.matchGlobs(e.inlineGlobs.current(e), w, e.toSchedule)
		}
	}
}

// eviction is a stream to remove once the engine's lock is released.
type eviction struct {
	s      *subscriber
	reason string
}

// evict removes the streams a dispatch found over their bounds, then sheds
// if the node's total is over MaxQueuedBytes. Called without e.mu.
func (e *Engine) evict(evs []eviction) {
	for _, v := range evs {
		e.remove(v.s, v.reason)
	}
	if e.shedDue() {
		e.shed()
	}
}

// schedule hands a subscriber with queued frames to its writer. It never
// blocks for long: a subscriber is in ready at most once (scheduled), and
// ready holds one slot per allowed connection.
func (e *Engine) schedule(s *subscriber) {
	if s.conn == nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return
	}
	e.ready <- s
}

// goLive ends a subscriber's replay: queued live frames start flowing.
func (e *Engine) goLive(s *subscriber, floor *wire.Cursor) {
	s.mu.Lock()
	s.live = true
	s.floor = floor
	// It has had no chance to take a byte yet: memory shedding must not
	// take it for the stream that took one longest ago.
	s.progressAt = time.Now()
	schedule := len(s.queue) > 0 && !s.scheduled && !s.closed
	if schedule {
		s.scheduled = true
	}
	s.mu.Unlock()
	if schedule {
		e.schedule(s)
	}
}

func (e *Engine) writer(ctx context.Context, ready chan *subscriber) {
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case s := <-ready:
			s.flushConn()
		}
		// Under load ready never empties and a writer would keep its
		// processor for a whole scheduler time slice (10 ms), while the
		// goroutines that publish, read the bus and accept streams wait
		// behind it. Yield now and then so they run within microseconds.
		if n%writerYieldEvery == 0 {
			runtime.Gosched()
		}
	}
}

// writerYieldEvery is how many connections a writer flushes between yields.
const writerYieldEvery = 4
