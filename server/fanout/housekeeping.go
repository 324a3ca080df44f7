package fanout

import (
	"context"
	"github.com/refcast/refcast/wire"
	"math/rand/v2"
	"time"
)

// Housekeeping: one shared ticker retries stalled writes, sends heartbeats
// and ends expired streams; Drain closes streams evenly over a window.

// stall parks a subscriber whose socket is full; the housekeeper retries it
// with a growing interval (as long as it has been stuck, between one tick
// and a second), so a crowd of stuck clients costs few retries, and evicts
// it once it has been stuck for WriteTimeout. wrote is what the flush that
// filled the socket still wrote: when it wrote something the client reads,
// only slower than events come, so its stall counts from now (evicted for
// slowness only after WriteTimeout without a byte taken); only after
// stuckAfter writes in a row that took nothing is it stuck, and its queue
// bound to MaxQueue (see subscriber.add). A stream that took bytes within
// the last second is retried every tick whatever this write did: a reader
// that drains its socket in milliseconds must not then sit out a second of
// backoff (it did, in BenchmarkStalledReaders: readers seconds behind a
// burst on an idle process). One whose flush took at least flowBytes is
// draining its socket fast and is retried after flowRetry.
func (e *Engine) stall(s *subscriber, wrote int64) {
	now := time.Now()
	progressed := wrote > 0
	s.mu.Lock()
	if s.stalledAt.IsZero() || progressed {
		s.stalledAt = now
	}
	if progressed {
		s.progressAt, s.idleWrites = now, 0
	} else {
		s.idleWrites++
	}
	forgetReads := s.reads && s.idleWrites >= stuckAfter
	wait := min(max(now.Sub(s.stalledAt), HousekeeperTick), time.Second)
	if now.Sub(s.progressAt) < recentProgress {
		wait = HousekeeperTick
	}
	fast := wrote >= flowBytes
	if fast {
		wait = flowRetry
	}
	if forgetReads {
		// It stopped: it must show it reads again, and meanwhile its
		// socket is capped and it gets no StallTimeout wait, as one
		// that never read (a client that read once would otherwise keep
		// both for good).
		s.reads = false
	}
	s.mu.Unlock()
	if forgetReads {
		s.taken = 0
		if s.unsentCapped {
			limitUnsent(s.raw)
		}
	}
	e.stallMu.Lock()
	e.stalled[s] = now.Add(wait)
	if fast {
		e.flowing = append(e.flowing, s)
	}
	e.stallMu.Unlock()
	if fast {
		select {
		case e.flowBell <- struct{}{}:
		default:
		}
	}
	e.metrics.Stalls.Inc()
}

// recentProgress is how recently a stalled stream must have taken bytes to
// be retried every tick rather than with the backoff of a stuck one.
const recentProgress = time.Second

// flowBytes and flowRetry: a stalled stream whose last flush took at
// least flowBytes is retried after flowRetry instead of at the next tick.
// The kernel holds at most unsentLimit not yet sent per socket until the
// client shows it reads, so a reader far behind a burst fills its socket at
// every write; retried only every 50 ms tick it got 128 KiB per tick, 2.6
// MB/s, and fell further behind (BenchmarkStalledReaders with no stalled
// stream: p99 108-125 ms without the limit, 620 ms with it and tick
// retries). A retry costs one system call, and a fast one is earned only
// by 64 KiB written, so a client trickling bytes cannot buy more than the
// tick's retries.
const (
	flowBytes = 64 << 10
	flowRetry = 2 * time.Millisecond
)

// unsentLimit is what the kernel may hold unsent per stream's socket until
// its client shows it reads (limitUnsent, Linux). 128 KiB: with 2,000
// streams that never read and a burst, the readers' p99 was lowest at 128
// KiB of 128, 256 and 1,024 KiB tried, and a stalled stream then pins
// 136 KB of kernel memory on loopback instead of 1.3 MB.
const unsentLimit = 128 << 10

// HousekeeperTick is the shared ticker's period. Each tick visits a slice
// of the subscribers, so heartbeats are spread over the interval instead of
// bursting. It is the precision of heartbeats (a stream silent for
// Heartbeat gets one within a tick), token expiry and stall retries.
const HousekeeperTick = 50 * time.Millisecond

func (e *Engine) housekeeper(ctx context.Context) {
	t := time.NewTicker(HousekeeperTick)
	defer t.Stop()
	// flow fires flowRetry after flowBell rang, for streams taking
	// bytes fast (see stall); it is armed only while there are some.
	flow := time.NewTimer(time.Hour)
	flow.Stop()
	armed := false
	for {
		select {
		case <-ctx.Done():
			flow.Stop()
			return
		case now := <-t.C:
			e.retryStalled(now)
			e.visit(now)
		case <-e.flowBell:
			if !armed {
				flow.Reset(flowRetry)
				armed = true
			}
		case now := <-flow.C:
			armed = false
			if e.retryFlowing(now) {
				flow.Reset(flowRetry)
				armed = true
			}
		}
	}
}

// retryFlowing hands the flowing streams that are due to the retry
// writers, and reports whether some are left for later.
func (e *Engine) retryFlowing(now time.Time) (more bool) {
	e.stallMu.Lock()
	var retry []*subscriber
	kept := e.flowing[:0]
	for _, s := range e.flowing {
		next, ok := e.stalled[s]
		switch {
		case !ok:
			// retried at a tick, or removed
		case !now.Before(next):
			delete(e.stalled, s)
			retry = append(retry, s)
		default:
			kept = append(kept, s)
		}
	}
	clear(e.flowing[len(kept):])
	e.flowing = kept
	more = len(kept) > 0
	e.stallMu.Unlock()
	for _, s := range retry {
		e.retry <- s // still holds scheduled, so it is in retry at most once
	}
	return more
}

func (e *Engine) retryStalled(now time.Time) {
	e.stallMu.Lock()
	if len(e.stalled) == 0 {
		e.stallMu.Unlock()
		return
	}
	var retry, evict []*subscriber
	for s, next := range e.stalled {
		s.mu.Lock()
		stuck := now.Sub(s.stalledAt)
		s.mu.Unlock()
		switch {
		case stuck > e.opts.WriteTimeout:
			evict = append(evict, s)
		case !now.Before(next):
			retry = append(retry, s)
		default:
			continue
		}
		delete(e.stalled, s)
	}
	e.stallMu.Unlock()
	for _, s := range evict {
		e.remove(s, ReasonSlowClient)
	}
	for _, s := range retry {
		e.retry <- s // still holds scheduled, so it is in retry at most once
	}
}

// visit sends heartbeats to, and closes expired streams of, the next slice
// of subscribers.
func (e *Engine) visit(now time.Time) {
	var expired []*subscriber
	e.mu.RLock()
	n := len(e.all)
	if n == 0 {
		e.mu.RUnlock()
		return
	}
	// A stream is visited once per round of about half a Heartbeat, and
	// sent a heartbeat when it would otherwise stay silent past Heartbeat
	// before its next visit: silent for more than Heartbeat minus a round.
	// So an idle stream still gets one about every Heartbeat, and a stream
	// that carried anything in the last half Heartbeat gets none. With a
	// round of a whole Heartbeat (as before) the threshold was a tick, and
	// every stream got a heartbeat every Heartbeat however busy it was:
	// 667 writes/s at 10,000 streams. In the spread scenario (10,000
	// streams, each sent an event every 5 s) that was 3-5 % of the node's
	// CPU per published event side by side on a quiet machine, 15-25 %
	// in single runs on a loaded one (docs/performance.md). Visiting
	// twice as many streams per tick costs an atomic load each.
	half := max(e.opts.Heartbeat/2, HousekeeperTick)
	per := max(1, int(int64(n)*int64(HousekeeperTick)/int64(half))+1)
	round := time.Duration((n+per-1)/per) * HousekeeperTick
	idle := now.Add(-max(e.opts.Heartbeat-round, 0)).UnixNano()
	for range min(per, n) {
		e.hbNext %= n
		s := e.all[e.hbNext]
		e.hbNext++
		if !s.expires.IsZero() && now.After(s.expires) {
			expired = append(expired, s)
			continue
		}
		if !s.waiter && s.lastWrite.Load() < idle {
			s.enqueue(heartbeatFrame, e.opts.MaxQueue)
		}
	}
	e.mu.RUnlock()
	for _, s := range expired {
		e.closeWith(s, []byte("event: error\ndata: {\"error\":\"token expired\",\"status\":401}\n\n"))
	}
}

// closeWithRetry ends a stream after telling the client to come back after
// a jittered delay, so a fleet spreads over the other nodes.
func (e *Engine) closeWithRetry(s *subscriber) {
	e.closeWith(s, wire.AppendRetry(nil, e.JitteredRetry()))
}

func (e *Engine) closeWith(s *subscriber, data []byte) {
	s.mu.Lock()
	closing := s.closing
	s.closing = true
	s.mu.Unlock()
	if closing {
		return
	}
	f := newFrame(data, nil)
	f.last = true
	if !s.enqueue(f, e.opts.MaxQueue+1) {
		e.remove(s, ReasonClosed)
	}
}

// JitteredRetry is Options.Retry plus up to 100% of it at random: the
// retry: hint a stream's opening and its end carry, so a fleet of clients
// told to leave comes back spread out. Safe for concurrent use.
func (e *Engine) JitteredRetry() time.Duration {
	return e.opts.Retry + rand.N(e.opts.Retry+1)
}

// Drain stops taking new streams (Register and Watch return ErrDraining
// from now on, for good) and closes the existing ones evenly over window:
// each stream is sent a jittered retry: hint as its last frame, after what
// was queued before it, and is removed once that is written (or it is
// evicted). A waiting long-poll is woken to answer. Drain returns when no
// stream is left or ctx ends, whichever is first; streams still open then
// are closed by Run's return. Safe for concurrent use.
func (e *Engine) Drain(ctx context.Context, window time.Duration) {
	e.mu.Lock()
	e.draining = true
	total := len(e.all)
	e.mu.Unlock()
	if total == 0 {
		return
	}
	// Close per streams every interval: one at a time spread over the
	// whole window when there are few, in batches every tick when many.
	interval := max(HousekeeperTick, window/time.Duration(total))
	steps := max(1, int(window/interval))
	per := max(1, (total+steps-1)/steps)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		e.mu.RLock()
		var batch []*subscriber
		for _, s := range e.all {
			if len(batch) == per {
				break
			}
			s.mu.Lock()
			if !s.closing {
				batch = append(batch, s)
			}
			s.mu.Unlock()
		}
		left := len(e.all)
		e.mu.RUnlock()
		if left == 0 {
			return
		}
		for _, s := range batch {
			e.closeWithRetry(s)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Draining reports whether Drain has begun. Safe for concurrent use.
func (e *Engine) Draining() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.draining
}
