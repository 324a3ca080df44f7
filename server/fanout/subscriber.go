package fanout

import (
	"errors"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// frame is one SSE frame, encoded once and shared by every subscriber it
// is queued for. Frames are immutable after creation, but for a fold's
// frame (own, one stream's), which its stream's writer encodes when it
// first writes it (payload).
type frame struct {
	data []byte     // complete frame: "id: …\nevent: ref\ndata: …\n\n"
	ev   *bus.Event // nil for heartbeats and control frames
	pos  []uint64   // the engine's position after this event (read-only)
	// checks are the cursor checks of pos (read-only).
	checks []uint32
	// epoch is the epoch fingerprint pos belongs to.
	epoch uint32
	// last closes the connection once written (drain, token expiry).
	last bool
	// size is the bytes the frame keeps alive, set at creation: its data
	// and, for an event, the decoded event it points to (eventBytes). 0 for
	// the shared heartbeat, which is never freed and not counted.
	size int64
	// refs is the number of streams holding the frame (queued, being
	// written or pending): the engine's memory total counts size once while
	// refs > 0, however many streams share it. See Engine.hold.
	refs atomic.Int32
	// own: re-encoded for one stream (a fold, a resumed cursor), so
	// evicting that stream frees it whole.
	own bool
	// folded: a fold of several updates of one ref (coalesce): the event
	// is ev with old as its Old (see event). The newest update's event is
	// shared rather than copied: a copy per fold was 51 MB of the 268 MB
	// BenchmarkStalledReaders allocated.
	folded bool
	old    string
	// bare is the same frame without its decoded event (same data, pos,
	// checks and epoch; ev nil, part set), which add queues to the streams
	// that need only its bytes: all but mode=latest ones, which fold by
	// the event. A frame holding the event kept it alive as long as any
	// stream held the frame: in BenchmarkStalledReaders 2.4 KB of decoded
	// event beside each 2.3 KB frame, half of what the node's streams held
	// at the heap's peak. Set by the bus reader on event frames (whose size
	// is then the event's alone: holding one holds its bare twin, which
	// counts the bytes, see Engine.hold); nil elsewhere.
	bare *frame
	// isEvent: the frame carries an event, decoded (ev) or not (a bare
	// frame, or one re-encoded for a floor): its partition is part and its
	// sequence number pos[part].
	isEvent bool
	part    int
}

// seq reports the partition and sequence number of the event f carries,
// ok false for a frame that carries none (heartbeats, control frames).
func (f *frame) seq() (part int, seq uint64, ok bool) {
	switch {
	case f.ev != nil:
		return f.ev.Partition, f.ev.Seq, true
	case f.isEvent:
		return f.part, f.pos[f.part], true
	}
	return 0, 0, false
}

// event is the event the frame carries: ev, or for a fold a copy of ev
// with the fold's old id, and the kind and forced flag that follow.
func (f *frame) event() *bus.Event {
	if !f.folded {
		return f.ev
	}
	m := *f.ev
	m.Old = f.old
	m.Kind = bus.KindOf(m.Old, m.New) // created and deleted while lagging: a delete
	if m.Kind == bus.KindUpdate {
		m.Forced = nil // unknown across several updates
	}
	return &m
}

// oldID is the Old of the event the frame carries, without a copy.
func (f *frame) oldID() string {
	if f.folded {
		return f.old
	}
	return f.ev.Old
}

var heartbeatFrame = &frame{data: []byte(wire.Heartbeat)}

// payload returns the frame's bytes, encoding a fold's frame (data nil,
// see coalesce) the first time it is written. Called by the one writer of
// the stream the frame belongs to.
func (f *frame) payload() []byte {
	if f.data == nil && f.ev != nil {
		f.data = wire.AppendEventFrame(nil, "ref", wire.Cursor{Epoch: f.epoch, Seqs: f.pos, Checks: f.checks}, f.event())
	}
	return f.data
}

// foldSize is what a fold's frame counts before it is encoded: the event
// and an estimate of its encoding (the event's strings again, and 256
// bytes of field names, id and framing).
func foldSize(ev *bus.Event) int64 { return 2*eventBytes(ev) + 256 }

// newFrame is a frame with its size set.
func newFrame(data []byte, ev *bus.Event) *frame {
	return &frame{data: data, ev: ev, size: int64(cap(data)) + eventBytes(ev)}
}

// newEventFrame is the frame of an event at position pos (with its checks
// and epoch), and its bare twin (frame.bare). The bare frame counts the
// data, the other the decoded event alone, and holding it holds the bare
// one too: the data counts once however many streams of either kind hold
// it.
func newEventFrame(data []byte, ev *bus.Event, pos []uint64, checks []uint32, epoch uint32) *frame {
	bare := &frame{data: data, size: int64(cap(data)), pos: pos, checks: checks, epoch: epoch, isEvent: true, part: ev.Partition}
	return &frame{data: data, ev: ev, size: eventBytes(ev), pos: pos, checks: checks, epoch: epoch, isEvent: true, part: ev.Partition, bare: bare}
}

// eventBytes estimates the memory an event holds: the struct and the
// strings it alone points to (repo and push id are shared by the events of
// a push and counted anyway: an over-estimate of a few dozen bytes).
func eventBytes(ev *bus.Event) int64 {
	if ev == nil {
		return 0
	}
	n := int64(unsafe.Sizeof(*ev)) + int64(len(ev.Repo)+len(ev.Ref)+len(ev.Old)+len(ev.New)+len(ev.PushID)+len(ev.Pusher)+len(ev.Source)+len(ev.Peeled)+len(ev.Enriched))
	if c := ev.Commit; c != nil {
		n += int64(unsafe.Sizeof(*c)) + int64(len(c.Subject)+len(c.Author))
	}
	return n
}

// subscriber is one streaming client (or long-poll). While idle it owns no
// goroutine, no timer and no buffer: a hijacked connection is written by
// the engine's writer pool when frames are queued; heartbeats come from the
// engine's shared ticker. Outside the package it is reached only through
// Stream and Waiter.
type subscriber struct {
	// Set at construction, read-only after (but for conn and raw).
	eng     *Engine
	filter  bus.Filter      // replaced by the interned copy in register, under Engine.mu
	shared  *sharedFilter   // the interned filter; set by register under Engine.mu
	latest  bool            // mode=latest: coalesce by ref instead of evicting
	conn    net.Conn        // hijacked HTTP/1.1 connection, set by Stream.Attach under mu before live; nil on the handler path
	waiter  bool            // a long-poll: no heartbeats
	raw     syscall.RawConn // conn's descriptor for non-blocking writev; set with conn
	wake    chan struct{}   // handler path and long-polls only: doorbell, capacity 1
	done    chan struct{}   // handler path and long-polls only: closed when removed
	expires time.Time       // token expiry; zero means never
	client  string          // per-client limit key
	// fromSeqs and fromEpoch: the position a glob stream registered at
	// (Engine.register, under Engine.mu), which the glob stage skips events
	// up to; nil for streams the repo index finds.
	fromSeqs  []uint64
	fromEpoch uint32
	// anonymous: no credential, Options.MaxPerAnonymous applies too
	anonymous bool

	lastWrite atomic.Int64 // unix nanoseconds of the last successful write
	// held is the bytes of the frames this stream holds (queue, out,
	// pending), each counted whole even when shared, plus slotBytes per
	// frame: what ranks streams for eviction when the node's total is
	// exceeded.
	held atomic.Int64
	// ownHeld is the part of held in frames of its own (frame.own): what
	// evicting it surely frees.
	ownHeld atomic.Int64

	mu        sync.Mutex
	queue     []*frame // guarded by mu
	live      bool     // replay finished, writes may start; guarded by mu
	scheduled bool     // owned by a writer or waiting in ready; guarded by mu
	// unsentCapped: Attach limited the socket's unsent bytes
	// (limitUnsent), which markReads lifts. Set by Attach before GoLive,
	// read-only after.
	unsentCapped bool
	// reads: the client once emptied a full socket (took flowBytes after
	// a stall) or took readsAfter in all, so it reads, if slower than
	// events come; set by the holder of scheduled, guarded by mu. Memory
	// shedding takes such streams last, and not at all while they hold
	// shared frames alone (see shed).
	reads     bool
	closed    bool      // guarded by mu
	closing   bool      // a last frame is queued; guarded by mu
	foldAt    int       // mode=latest: queue length of the next fold; guarded by mu
	stalledAt time.Time // when its socket filled; zero when not stalled; guarded by mu
	// idleWrites counts the writes in a row that found its socket full and
	// took nothing; guarded by mu.
	idleWrites int
	// progressAt: when a write last took bytes (a whole write, or part of
	// one that then filled the socket); guarded by mu.
	progressAt time.Time
	// floor: drop events at or below its Seqs, raise the ids of the
	// others to it (a resumed client ahead of the node); guarded by mu.
	floor *wire.Cursor

	// Owned by whoever holds scheduled (one writer at a time).
	taken int64 // bytes the socket took since Attach, up to readsAfter
	out   []*frame
	bufs  net.Buffers
	// pending is the unwritten tail of a write that timed out: slices of
	// the shared, immutable frames, never a copy. pendingFrames are the
	// frames it was cut from, held (and counted) until it is written.
	pending       net.Buffers
	pendingFrames []*frame
	// pendingLast: pending ends with a closing frame.
	pendingLast bool

	idx int // position in Engine.all, -1 when not registered; guarded by Engine.mu
}

// enqueue queues a frame. It never blocks; it reports false when the
// subscriber must be evicted (its queue is full while its socket is
// stalled, or past the hard bound, and it cannot coalesce).
// Called by the engine, with or without Engine.mu held.
func (s *subscriber) enqueue(f *frame, maxQueue int) bool {
	evict, schedule := s.add(f, maxQueue)
	if schedule {
		s.eng.schedule(s)
	}
	return evict == ""
}

// add queues a frame like enqueue but leaves handing the subscriber to a
// writer to the caller: schedule is true when the caller must (the
// subscriber is then marked scheduled and waits until it does). The engine
// uses it to queue a whole batch of events before any writer starts, so a
// busy connection gets the batch in one write. evict is the reason the
// subscriber must be evicted (ReasonQueueFull, ReasonMemory), "" if none.
func (s *subscriber) add(f *frame, maxQueue int) (evict string, schedule bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.closing && !f.last {
		// Nothing after a last frame: a writer's batch held it and the
		// events queued after it, and wrote them all before closing. A
		// stream closed for a rewind then gave its client events of the
		// new history past the lost ones, without the reset its
		// reconnect would bring (TestRewindSentinelFailover, once in
		// about 20 runs). The client resumes from its cursor.
		return "", false
	}
	if f.bare != nil && !s.latest {
		f = f.bare
	}
	if len(s.queue) >= maxQueue {
		switch {
		case s.latest && f.ev != nil && len(s.queue) >= s.foldAt && s.eng.overMemory():
			// A fold re-encodes frames for this stream alone: with the
			// node over its bound, a thousand folding streams would each
			// add their own copies before the next check. Evict instead.
			return ReasonMemory, false
		case s.latest && f.ev != nil && len(s.queue) >= s.foldAt:
			// Fold, then not again until the queue has doubled: a push of
			// thousands of distinct refs costs linear work, not a fold
			// per event.
			ok := s.coalesce(f, maxQueue)
			s.foldAt = max(maxQueue, 2*len(s.queue))
			if !ok {
				return ReasonQueueFull, false
			}
			return "", false
		case s.latest && f.ev != nil:
			// between folds: queue it (bounded by 2 × the folded bound)
		case s.stuck() || len(s.queue) >= maxQueue+bus.MaxUpdatesPerPush:
			// maxQueue is a soft bound: one large push can exceed it for
			// a client that keeps up, and a burst for one that reads
			// slower than it comes but reads. Only a client whose socket
			// stopped taking bytes, or whose queue reaches the hard bound,
			// is evicted here; what the queues hold is bounded in total by
			// MaxQueuedBytes (shed).
			return ReasonQueueFull, false
		}
	}
	s.queue = append(s.queue, f)
	s.eng.hold(s, f)
	schedule = s.live && !s.scheduled
	if schedule {
		s.scheduled = true
	}
	return "", schedule
}

// stuck reports whether the stream's socket is full and its last
// stuckAfter writes took no byte. Called with s.mu held.
func (s *subscriber) stuck() bool { return !s.stalledAt.IsZero() && s.idleWrites >= stuckAfter }

// stuckAfter is how many writes in a row must take nothing for a stalled
// stream to count as stuck rather than slow: two, so a reader the machine
// did not schedule during one retry is not taken for one that stopped (a
// reader's retries come a tick, 50 ms, apart).
const stuckAfter = 2

// foldKey is a ref of a repo, as coalesce folds by.
type foldKey struct{ repo, ref string }

// foldIndexes holds coalesce's maps (ref -> index in the folded queue) for
// reuse: a new one per fold was 24 MB of the 268 MB
// BenchmarkStalledReaders allocated.
var foldIndexes = sync.Pool{New: func() any { return make(map[foldKey]int) }}

// coalesce folds the queue by ref for a mode=latest subscriber: for each
// (repo, ref) one event remains, old from the first queued, new and the
// rest from the newest. The folded frames are this subscriber's own.
// Reports false if even the folded queue exceeds the bound of distinct refs
// (4 × maxQueue + the refs of one push, so one large push never evicts a
// client). Called with s.mu held.
func (s *subscriber) coalesce(f *frame, maxQueue int) bool {
	at := foldIndexes.Get().(map[foldKey]int)
	defer func() {
		clear(at)
		foldIndexes.Put(at)
	}()
	out := make([]*frame, 0, len(s.queue)+1)
	for _, q := range append(s.queue, f) {
		if q.ev == nil || q.ev.Kind == bus.KindSync {
			if q.ev != nil || q.last {
				out = append(out, q)
			}
			continue
		}
		k := foldKey{q.ev.Repo, q.ev.Ref}
		i, ok := at[k]
		if !ok {
			at[k] = len(out)
			out = append(out, q)
			continue
		}
		// The merged update takes the newest one's place, so ids keep rising.
		// Its frame is encoded when it is written (payload), not here: a
		// stream whose socket takes nothing may fold a thousand times, and
		// 1,000 such streams re-encoding every fold were the bus reader's
		// largest cost in BenchmarkStalledReaders.
		old := out[i].oldID()
		out[i], at[k] = nil, len(out)
		nf := &frame{ev: q.ev, folded: true, old: old, pos: q.pos, checks: q.checks, epoch: q.epoch, own: true, size: foldSize(q.ev)}
		out = append(out, nf)
		s.eng.metrics.Coalesced.Inc()
	}
	out = slices.DeleteFunc(out, func(f *frame) bool { return f == nil })
	if len(out) > 4*maxQueue+bus.MaxUpdatesPerPush {
		return false
	}
	// Count what the folded queue holds before letting go of the old one,
	// so a frame kept in both is never counted as freed.
	for _, f := range out {
		s.eng.hold(s, f)
	}
	s.eng.unhold(s, s.queue)
	s.queue = out
	if s.live && !s.scheduled {
		s.scheduled = true
		s.eng.schedule(s) // never blocks: see Engine.schedule
	}
	return true
}

// takeQueue moves the queue to s.out for writing, dropping events a resumed
// client already has (floor). Called by the holder of scheduled.
func (s *subscriber) takeQueue() (closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true
	}
	s.out, s.queue = s.queue, s.out[:0]
	s.foldAt = 0
	if s.floor != nil {
		kept := s.out[:0]
		for _, f := range s.out {
			part, seq, isEvent := f.seq()
			switch {
			case !isEvent, s.floor == nil: // the floor was passed by an earlier frame
				kept = append(kept, f)
			case seq <= s.floor.Seqs[part]:
				// already delivered from the history or another node
				s.eng.unhold(s, []*frame{f})
			case wire.AtLeast(f.pos, s.floor.Seqs):
				s.floor = nil
				kept = append(kept, f)
			default:
				c := wire.Cursor{Epoch: f.epoch, Seqs: f.pos, Checks: f.checks}.Clone()
				c.Merge(*s.floor)
				nf := newFrame(wire.AppendWithID(nil, f.payload(), c), nil)
				nf.pos, nf.checks, nf.epoch, nf.own, nf.isEvent, nf.part = c.Seqs, c.Checks, f.epoch, true, true, part
				s.eng.hold(s, nf)
				s.eng.unhold(s, []*frame{f})
				kept = append(kept, nf)
			}
		}
		clear(s.out[len(kept):])
		s.out = kept
	}
	return false
}

// queueHalfFull reports whether half the queue bound is used: such a
// stream is written at once rather than batched, so a large push cannot
// fill it while it waits.
func (s *subscriber) queueHalfFull(maxQueue int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) >= maxQueue/2
}

func (s *subscriber) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// release gives up scheduled, or keeps it and reports true when more frames
// arrived meanwhile.
func (s *subscriber) release() (again bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (len(s.queue) > 0 || len(s.out) > 0) && !s.closed {
		return true
	}
	if s.closed {
		s.dropWriting()
	}
	s.scheduled = false
	// An idle subscriber keeps no buffers.
	if cap(s.out) > 8 {
		s.out = nil
	}
	if cap(s.bufs) > 8 {
		s.bufs = nil
	}
	return false
}

// flushConn writes queued frames to a hijacked connection. Called by a
// writer goroutine holding scheduled. Writes never wait for long (one
// non-blocking writev; StallTimeout for a client known to read, or where
// the descriptor is not reachable): a client whose socket is full is
// parked (stalled) and retried by the housekeeper, so one slow client
// never holds a writer. Each write takes at most maxWriteFrames frames
// from out.
func (s *subscriber) flushConn() {
	e := s.eng
	// took is what this flush wrote; refilling, that the socket was full
	// before it (a retry): taking flowBytes now shows the client reads.
	var took int64
	s.mu.Lock()
	refilling := !s.stalledAt.IsZero()
	s.mu.Unlock()
	for {
		// While a timed-out write is unfinished, new frames stay in the
		// bounded queue (where they evict or coalesce) instead of piling up
		// in pending.
		if len(s.pending) > 0 || len(s.out) > 0 {
			if s.isClosed() {
				s.dropWriting()
				return
			}
		} else if s.takeQueue() {
			return
		}
		s.bufs = s.bufs[:0]
		s.bufs = append(s.bufs, s.pending...)
		last := s.pendingLast
		var batch []*frame
		if len(s.pending) == 0 {
			batch = s.out[:min(len(s.out), maxWriteFrames)]
		}
		for _, f := range batch {
			s.bufs = append(s.bufs, f.payload())
			last = last || f.last
		}
		var want int64
		for _, b := range s.bufs {
			want += int64(len(b))
		}
		// Both writes consume the slice they are given: give them a copy
		// of the header so s.bufs keeps its array for the next flush.
		rest := s.bufs
		var n int64
		var err error
		if s.raw != nil {
			// The common case: the socket takes everything at once, with
			// no deadline timer armed.
			n, err = writeNow(s.raw, &rest)
		}
		if s.raw == nil || errors.Is(err, errWouldBlock) && s.reads {
			// A full socket: give a busy but healthy reader StallTimeout
			// to make room before parking it. Only one known to read: the
			// writers waited out every stalled stream's socket too, 2,000
			// of them 100 ms of the pool's time per round, while readers
			// registered after them had not had a first write
			// (BenchmarkStalledReaders).
			_ = s.conn.SetWriteDeadline(time.Now().Add(e.opts.StallTimeout))
			var m int64
			m, err = rest.WriteTo(s.conn)
			n += m
			if s.raw != nil {
				// writeNow honours deadlines too: disarm it again.
				_ = s.conn.SetWriteDeadline(time.Time{})
			}
		}
		took += n
		if !s.reads {
			s.taken += n
			if refilling && took >= flowBytes || s.taken >= readsAfter {
				s.markReads()
			}
		}
		clear(s.pending)
		s.pending = s.pending[:0]
		// The batch left out: its frames are written, or held by pending.
		s.pendingFrames = append(s.pendingFrames, batch...)
		clear(batch)
		s.out = s.out[len(batch):]
		if err != nil {
			if errors.Is(err, errWouldBlock) || errors.Is(err, os.ErrDeadlineExceeded) {
				if n < want {
					// keep what is left: slices of the shared frames, no
					// copy (rest shares s.bufs' array: copy before clearing)
					s.pending = append(s.pending, rest...)
					s.pendingLast = last // close once pending is out
				} else {
					s.releasePending()
				}
				clear(s.bufs) // drop references to written frames
				e.stall(s, took)
				return
			}
			clear(s.bufs)
			e.remove(s, ReasonWriteError)
			s.dropWriting()
			return
		}
		clear(s.bufs) // drop references to written frames
		s.releasePending()
		s.lastWrite.Store(time.Now().UnixNano())
		e.metrics.Writes.Inc()
		if last {
			e.remove(s, ReasonClosed)
			s.dropWriting()
			return
		}
		s.mu.Lock()
		s.stalledAt, s.progressAt, s.idleWrites = time.Time{}, time.Now(), 0
		s.mu.Unlock()
		if !s.release() {
			return
		}
	}
}

// readsAfter is what a socket must take in all for its client to count as
// reading even if it never emptied a full socket: a client that never
// reads takes its receive buffer (tcp_rmem's default 128 KiB, which the
// kernel grows only for a client that reads; 4 KiB in
// BenchmarkStalledReaders), what is in flight to it (no more than that
// window) and the unsent cap (128 KiB), well under 1 MiB. The 20 readers
// of BenchmarkStalledReaders, 4 MiB behind on a loaded machine before
// their socket first filled, counted as clients not known to read and
// were shed for memory.
const readsAfter = 1 << 20

// markReads records that the client emptied a full socket, so it reads
// (a client that stopped never takes flowBytes once its socket is full),
// or took readsAfter, and takes limitUnsent's cap off its socket. Called
// by the holder of scheduled.
func (s *subscriber) markReads() {
	s.mu.Lock()
	s.reads = true
	s.mu.Unlock()
	if s.unsentCapped {
		liftUnsent(s.raw)
	}
}

// releasePending lets go of the frames of a finished write. Called by the
// holder of scheduled.
func (s *subscriber) releasePending() {
	s.eng.unhold(s, s.pendingFrames)
	clear(s.pendingFrames)
	s.pendingFrames = s.pendingFrames[:0]
}

// dropWriting lets go of everything taken for writing (out, pending) of a
// removed stream. Called by the holder of scheduled, or by remove for a
// parked stream (whose scheduled it then holds).
func (s *subscriber) dropWriting() {
	s.releasePending()
	clear(s.pending)
	s.pending = s.pending[:0]
	s.eng.unhold(s, s.out)
	clear(s.out)
	s.out = s.out[:0]
}

// flushHTTP writes queued frames through an http.ResponseWriter: the
// handler path for HTTP/2 and for connections that cannot be hijacked. It
// runs on the handler's goroutine. It reports false when the stream ends.
func (s *subscriber) flushHTTP(w http.ResponseWriter, rc *http.ResponseController) bool {
	for {
		if s.takeQueue() {
			return false
		}
		last := false
		_ = rc.SetWriteDeadline(time.Now().Add(s.eng.opts.WriteTimeout))
		for _, f := range s.out {
			if _, err := w.Write(f.payload()); err != nil {
				s.eng.remove(s, ReasonWriteError)
				s.dropWriting()
				return false
			}
			last = last || f.last
		}
		s.dropWriting() // written: what they pinned is free
		if err := rc.Flush(); err != nil {
			s.eng.remove(s, ReasonWriteError)
			return false
		}
		s.lastWrite.Store(time.Now().UnixNano())
		if last {
			s.eng.remove(s, ReasonClosed)
			return false
		}
		if !s.release() {
			return true
		}
	}
}

// abortOnClose makes the coming close of an evicted stream's connection
// abortive (SO_LINGER 0: a reset, its unsent bytes dropped) instead of
// leaving the kernel to deliver them to a client that is not reading. An
// evicted client resumes from its cursor and needs none of them, while an
// orphaned socket keeps its send buffer: 2,000 evicted non-readers left
// some 1.6 GB of socket memory, past the kernel's tcp_mem pressure mark,
// which then throttled every other connection (BenchmarkStalledReaders:
// readers seconds behind on an idle process).
func (s *subscriber) abortOnClose() {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// markClosed stops further writes and releases the connection.
func (s *subscriber) markClosed() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.eng.unhold(s, s.queue)
	s.queue = nil
	conn := s.conn
	s.mu.Unlock()
	if already {
		return
	}
	if conn != nil {
		_ = conn.Close()
	}
	if s.done != nil {
		close(s.done)
	}
}
