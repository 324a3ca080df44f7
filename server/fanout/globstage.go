package fanout

import (
	"context"
	"time"

	"github.com/refcast/refcast/bus"
)

// The glob stage. Streams whose filter names a repo glob must be matched
// against every event, whatever its repo: their cost grows with their
// number and their patterns (the worst accepted filter costs some 8 µs per
// event per stream on 2 cores, so 1,000 distinct ones cost a core at 100
// events/s). The bus reader matches only the streams the repo index finds
// (exact repo names), hands every event on to this stage's own goroutine,
// and goes on with the next event: streams naming their repos keep the
// latency they have on an idle node while globs are matched beside them
// (BenchmarkCostlySubscriptions). Each stream is matched by one stage
// only, so its frames stay in order.
//
// The stage lags the bus reader, so a glob stream registered at position
// pos may still see events at or before pos go through the stage; those it
// skips (subscriber.fromSeqs): the handler replays them from the history.

// globQueue bounds the events waiting for the glob stage: past it the bus
// reader waits (the node falls behind the bus, which holds the history),
// never memory. 4,096 events is 41 s of the 100 events/s a node is sized
// for, and some 2 MB of pointers and frames.
const globQueue = 4096

// globWork is one event for the glob stage, or a barrier.
type globWork struct {
	ev      *bus.Event
	f       *frame
	read    time.Time // when the bus reader read it (fan-out latency)
	barrier chan struct{}
}

// sendGlobs hands an event to the glob stage. While the stage is full the
// bus reader first hands what it queued to the writers, then waits.
// Called by the bus reader only.
func (e *Engine) sendGlobs(ctx context.Context, w globWork) {
	select {
	case e.globCh <- w:
		return
	default:
	}
	e.flushScheduled()
	select {
	case e.globCh <- w:
	case <-ctx.Done():
	}
}

// globBarrier waits until the glob stage has matched (and handed to the
// writers) every event sent before it: a reset must not overtake them.
// Called by the bus reader only.
func (e *Engine) globBarrier(ctx context.Context) {
	done := make(chan struct{})
	select {
	case e.globCh <- globWork{barrier: done}:
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// globStage runs the glob stage until ctx is done.
func (e *Engine) globStage(ctx context.Context) {
	var (
		globs      globView
		toSchedule []*subscriber
		queued     int // events matched since the last hand-off
	)
	for {
		var w globWork
		select {
		case <-ctx.Done():
			return
		case w = <-e.globCh:
		}
		if w.barrier != nil {
			toSchedule = e.handOffList(toSchedule)
			queued = 0
			close(w.barrier)
			continue
		}
		toSchedule = e.matchGlobs(globs.current(e), w, toSchedule)
		queued++
		// Hand off when nothing more waits, as the bus reader does at the
		// end of a batch, or every maxDispatchBatch events under load.
		if len(e.globCh) == 0 || queued >= maxDispatchBatch {
			toSchedule = e.shrinkSchedule(e.handOffList(toSchedule))
			queued = 0
		}
	}
}

// globView is a copy of the glob streams, taken again when they changed
// (globVersion): the glob stage's, or the bus reader's when there is no
// glob stage. Owned by one goroutine.
type globView struct {
	subs    []*subscriber
	version uint64
}

// current returns the glob streams, copying them anew under e.mu if they
// changed since the last copy. Called without e.mu.
func (v *globView) current(e *Engine) []*subscriber {
	if ver := e.globVersion.Load(); ver != v.version || v.subs == nil {
		v.subs, v.version = e.globSnapshot(v.subs[:0])
	}
	return v.subs
}

// globSnapshot copies the glob streams into dst and returns it with the
// version it is of.
func (e *Engine) globSnapshot(dst []*subscriber) ([]*subscriber, uint64) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for s := range e.globs {
		dst = append(dst, s)
	}
	return dst, e.globVersion.Load()
}

// matchGlobs queues w's frame to the glob streams it matches and returns
// toSchedule with those that need a writer. Streams that share a filter
// share its match (sharedFilter's glob stamp, owned by this stage).
func (e *Engine) matchGlobs(subs []*subscriber, w globWork, toSchedule []*subscriber) []*subscriber {
	e.globStamp++
	stamp := e.globStamp
	n := 0
	var evict []eviction
	for _, s := range subs {
		if !s.after(w.ev, w.f) {
			continue // registered after this event: the handler replays it
		}
		sf := s.shared
		if sf.globStamp != stamp {
			sf.globStamp, sf.globMatch = stamp, sf.f.Match(w.ev)
		}
		if !sf.globMatch {
			continue
		}
		n++
		reason, schedule := s.add(w.f, e.opts.MaxQueue)
		if reason != "" {
			evict = append(evict, eviction{s, reason})
		}
		if schedule {
			toSchedule = append(toSchedule, s)
		}
	}
	e.metrics.Deliveries.Add(float64(n))
	e.metrics.FanoutLatency.Observe(time.Since(w.read).Seconds())
	e.evict(evict)
	return toSchedule
}

// after reports whether the glob stage should queue ev (framed as f) to s:
// the event came after s registered. Set for glob streams only.
func (s *subscriber) after(ev *bus.Event, f *frame) bool {
	if s.fromSeqs == nil {
		return true
	}
	if f.epoch != s.fromEpoch {
		return false // from before a reset that preceded the stream
	}
	return ev.Partition < len(s.fromSeqs) && ev.Seq > s.fromSeqs[ev.Partition]
}
