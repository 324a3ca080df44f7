package fanout

import (
	"slices"
	"time"
)

// Memory accounting: what streams that do not read can pin is bounded per
// node (Options.MaxQueuedBytes); per stream, by the frames of its queue
// (MaxQueue; one push may exceed it, which must never evict a client) and
// by maxWriteFrames in what a write takes.
//
// How it counts. A frame's size is its encoded bytes plus the decoded event
// it points to, if any (newFrame). An event has two frames (newEventFrame):
// most streams hold the bare one, its bytes alone (frame.bare), and
// mode=latest ones the other, which counts the decoded event and holds the
// bare one with it. An event's frame is shared by every stream it is
// queued to, so the node's total counts it once, while at least one stream
// holds it: frame.refs counts the holders and the total moves when it goes
// from 0 to 1 and back. A frame re-encoded for one stream (a fold in
// mode=latest, a resumed stream's merged cursor) has one holder, so it is
// counted whole for that stream. Each frame a stream holds also costs the
// stream slotBytes. A stream's own figure (subscriber.held) counts every
// frame it holds whole, shared or not: that ranks the streams to evict.
// The write path's arrays (bufs,
// pending, iovecs) are bounded by maxWriteFrames rather than counted.
//
// Cost on the hot path: per frame queued to a stream, three uncontended
// atomic adds on the dispatch goroutine (the stream's figure, the frame's
// holders, the node's total); a write releases its whole batch with one
// add to each figure plus one per frame on the holders.

// slotBytes is what a queued frame costs the stream holding it besides the
// frame: its pointer in the queue and, once taken for writing, in out.
const slotBytes = 16

// maxWriteFrames bounds the frames one write takes from out, so the arrays
// a write needs (bufs and pending, 24 B a frame each, and the kernel's
// iovecs, 16 B) stay under 4 KiB per stream whatever the backlog: 64
// frames of 2.3 KB are 147 KB, more than a socket's send buffer usually
// takes at once, so a reader that keeps up still gets a batch per call.
const maxWriteFrames = 64

// ReasonMemory is the eviction reason of streams closed because the node's
// queued bytes passed Options.MaxQueuedBytes (the streams holding the most
// go first), or because a mode=latest stream would fold while it is.
const ReasonMemory = "memory"

// hold counts a frame s starts to hold, and the bare twin of an event's
// frame with it (frame.bare).
func (e *Engine) hold(s *subscriber, f *frame) {
	if f.size == 0 {
		return
	}
	held, add := f.size+slotBytes, int64(slotBytes)
	if f.own {
		s.ownHeld.Add(f.size)
	}
	if f.refs.Add(1) == 1 {
		add += f.size
	}
	if b := f.bare; b != nil {
		held += b.size
		if b.refs.Add(1) == 1 {
			add += b.size
		}
	}
	s.held.Add(held)
	e.queued.Add(add)
}

// unhold counts frames s no longer holds, as hold counted them; nil
// entries are skipped.
func (e *Engine) unhold(s *subscriber, fs []*frame) {
	var held, own, total int64
	for _, f := range fs {
		if f == nil || f.size == 0 {
			continue
		}
		held += f.size + slotBytes
		if f.own {
			own += f.size
		}
		total += slotBytes
		if f.refs.Add(-1) == 0 {
			total += f.size
		}
		if b := f.bare; b != nil {
			held += b.size
			if b.refs.Add(-1) == 0 {
				total += b.size
			}
		}
	}
	if held != 0 {
		s.held.Add(-held)
		e.queued.Add(-total)
	}
	if own != 0 {
		s.ownHeld.Add(-own)
	}
}

// QueuedBytes returns the bytes the node's streams hold in queued and
// unwritten frames, as counted against Options.MaxQueuedBytes. Safe for
// concurrent use.
func (e *Engine) QueuedBytes() int64 { return e.queued.Load() }

// overMemory reports whether the node's total passed MaxQueuedBytes.
func (e *Engine) overMemory() bool { return e.queued.Load() > e.opts.MaxQueuedBytes }

// holding is a candidate of shed.
type holding struct {
	s          *subscriber
	held, own  int64
	class      shedClass
	progressAt time.Time
}

// shedClass orders shed's candidates: lower goes first.
type shedClass uint8

const (
	// shedStuck: socket full, its last writes took nothing.
	shedStuck shedClass = iota
	// shedFull: socket full, the client not yet known to read.
	shedFull
	// shedFullReader: socket full, the client known to read (reads).
	shedFullReader
	// shedWaiting: socket not full: the stream waits for a writer, not
	// for its client, so it holds frames because the node is behind.
	shedWaiting
)

// classify is s's shedClass. Called with s.mu held.
func (s *subscriber) classify() shedClass {
	switch {
	case s.stuck():
		return shedStuck
	case s.stalledAt.IsZero():
		return shedWaiting
	case s.reads:
		return shedFullReader
	default:
		return shedFull
	}
}

// shed evicts streams, in shedClass order: first those that are stuck,
// then those whose socket is full, those not known to read before those
// that are, and last those whose socket is not full (whose frames wait
// for the node's writers, not for the client); known readers and those
// waiting only if they hold frames of their own (folds, re-encodings) or
// the node's total is past twice the bound; within a class, by how
// long ago they took a byte (or went live), then those holding the most
// frames of their own (folded or re-encoded for them, which evicting
// frees whole), then by all they hold; until the node's total is back
// under three quarters of MaxQueuedBytes (so a crowd hovering at the bound
// does not cost a scan per event), or until the evicted streams' own
// figures add up to the excess: those count shared frames whole, so the
// next event's check evicts more if that freed too little. Called by the
// bus reader or the glob stage (one at a time), without e.mu.
func (e *Engine) shed() {
	if !e.shedMu.TryLock() {
		return // the other stage is shedding; the next event checks again
	}
	defer e.shedMu.Unlock()
	target := e.opts.MaxQueuedBytes - e.opts.MaxQueuedBytes/4
	excess := e.queued.Load() - target
	if excess <= 0 {
		return
	}
	// The candidates' array is kept for the next shed: during a burst
	// over the bound a shed runs every few events, and a new array each
	// time (2,000 streams: 112 KB) was 16 % of what BenchmarkStalledReaders
	// allocated.
	// Past twice the bound, every stream is a candidate: readers holding
	// shared frames alone are spared only up to there.
	ceiling := e.queued.Load() > 2*e.opts.MaxQueuedBytes
	cands := e.shedCands[:0]
	defer func() {
		clear(cands)
		e.shedCands = cands[:0]
	}()
	e.mu.RLock()
	for _, s := range e.all {
		if h := s.held.Load(); h > 0 {
			s.mu.Lock()
			class, progressAt := s.classify(), s.progressAt
			// Its backlog is shared when the oldest frame it queues is
			// held by another stream too (or it queues none: what it
			// holds is being written).
			shared := len(s.queue) == 0 || s.queue[0].refs.Load() > 1
			s.mu.Unlock()
			own := s.ownHeld.Load()
			if class >= shedFullReader && own == 0 && shared && s.conn != nil && !ceiling {
				// A reader, or a hijacked stream whose frames wait for
				// the node's writers, whose backlog other streams share:
				// closing it frees only its slots until every stream
				// sharing it is closed too. One evicted after another,
				// all 20 readers of BenchmarkStalledReaders were closed
				// in runs on a loaded machine, their shared backlog over
				// the bound. (A handler-path stream is never marked
				// stalled, so it is not spared.)
				continue
			}
			cands = append(cands, holding{s, h, own, class, progressAt})
		}
	}
	e.mu.RUnlock()
	// Readers a burst behind hold the most, and the streams the writers
	// have not reached yet hold a burst too: ranked by what they hold or
	// by when they were last written, they went before clients that had
	// stopped reading (BenchmarkStalledReaders: 8-14 of 20 readers, some
	// never written once, closed after 2,000 streams that never read).
	slices.SortFunc(cands, func(a, b holding) int {
		if a.class != b.class {
			return int(a.class) - int(b.class)
		}
		if a.class != shedStuck && !a.progressAt.Equal(b.progressAt) {
			return a.progressAt.Compare(b.progressAt)
		}
		if a.own != b.own {
			return int(min(max(b.own-a.own, -1), 1))
		}
		return int(min(max(b.held-a.held, -1), 1))
	})
	if len(cands) == 0 {
		// Over the bound with nothing to shed (readers holding shared
		// frames): scanning every stream again at each event cost the
		// bus reader most of its time (readers' p99 in
		// BenchmarkStalledReaders 0.8-1.5 s instead of 0.4-0.6).
		e.shedIdleUntil.Store(time.Now().Add(shedIdleBackoff).UnixNano())
		return
	}
	var freed int64
	for _, c := range cands {
		if freed >= excess || e.queued.Load() <= target {
			break
		}
		e.remove(c.s, ReasonMemory)
		freed += c.held
	}
}

// shedIdleBackoff is how long a shed that found no stream to evict keeps
// the next one from scanning, unless the total passes twice the bound: a
// fifth of the housekeeper's tick. A stream that becomes stuck meanwhile
// waits for it; what the node queues in 10 ms is a few MiB at most
// (54,000 streams on one repo at 16 events/s: 2.6 MB).
const shedIdleBackoff = 10 * time.Millisecond

// shedDue reports whether the node's total is over MaxQueuedBytes and
// either over twice that or past the backoff of a shed that found nothing
// to evict.
func (e *Engine) shedDue() bool {
	q := e.queued.Load()
	return q > e.opts.MaxQueuedBytes && (q > 2*e.opts.MaxQueuedBytes || time.Now().UnixNano() >= e.shedIdleUntil.Load())
}
