package fanout

import (
	"github.com/refcast/refcast/wire"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/refcast/refcast/bus"
)

// Spec describes a stream to register.
type Spec struct {
	// Filter selects the events; the engine keeps one interned copy per
	// distinct filter.
	Filter bus.Filter
	// Latest (mode=latest): a stream that falls behind has its queue
	// folded by ref instead of being evicted.
	Latest bool
	// Expires is when the stream's credential expires: the stream is then
	// ended with an error frame. Zero: never.
	Expires time.Time
	// Client keys the per-client limit (Options.MaxPerClient); "" is not
	// limited.
	Client string
	// Anonymous: the client showed no credential, so the stricter
	// Options.MaxPerAnonymous applies to its key as well.
	Anonymous bool
	// Handler: the stream is written on its handler's goroutine with
	// FlushHTTP (HTTP/2, or a connection that is not hijacked), instead of
	// by the writer pool on a connection handed over with Attach.
	Handler bool
}

// Stream is a registered event stream: the handle its HTTP handler holds.
// It is a small value; copies refer to the same stream. The zero Stream is
// not registered and must not be used.
//
// Its life: Register, then either Attach (hijacked) or the handler path,
// the opening written by the handler, GoLive, then the engine writes
// (hijacked) or the handler loops on Wake and FlushHTTP until Done; Remove
// at any point ends it. Remove, Wake and Done are safe for concurrent use;
// Attach, GoLive and FlushHTTP belong to the stream's handler goroutine.
type Stream struct{ s *subscriber }

// Register adds a stream and returns the position from which it receives
// live frames: every event dispatched after pos is queued to it, none at
// or before. Queued frames wait until GoLive, so the handler can first
// replay the history up to pos. It fails with ErrNotReady before the
// engine has read the bus, ErrDraining once Drain began, and
// ErrTooManyConnections or ErrTooManyForClient at the limits. Safe for
// concurrent use; a stream that registered must be removed (Remove), or
// it is by the engine when it is evicted, drained, expires or Run returns.
func (e *Engine) Register(sp Spec) (Stream, wire.Cursor, error) {
	s := &subscriber{eng: e, filter: sp.Filter, latest: sp.Latest, expires: sp.Expires, client: sp.Client, anonymous: sp.Anonymous, idx: -1}
	if sp.Handler {
		s.wake = make(chan struct{}, 1)
		s.done = make(chan struct{})
	}
	pos, err := e.register(s)
	if err != nil {
		return Stream{}, wire.Cursor{}, err
	}
	return Stream{s}, pos, nil
}

// Attach hands a hijacked connection to the engine, which from then on
// owns it: it closes it when the stream is removed. Call it once, before
// GoLive, on a stream registered without Spec.Handler; the handler may
// still write the opening to conn itself until GoLive. If the stream was
// removed meanwhile, Attach closes conn and reports false.
func (st Stream) Attach(conn net.Conn) bool {
	var raw syscall.RawConn
	if sc, ok := conn.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	capped := raw != nil && limitUnsent(raw)
	s := st.s
	s.mu.Lock()
	s.conn, s.raw, s.unsentCapped = conn, raw, capped
	evicted := s.closed // removed while the handler was hijacking
	s.mu.Unlock()
	if evicted {
		_ = conn.Close()
		return false
	}
	return true
}

// GoLive ends the stream's opening, which its handler has just written:
// frames queued since Register start flowing, those for events at or
// below floor (per partition; nil for none) dropped, since the client
// already has them, and the ids of the others raised to floor where it is
// ahead (with floor's checks). The stream counts as written now, for
// heartbeats and batching. Call it once, from the handler.
func (st Stream) GoLive(floor *wire.Cursor) {
	st.s.lastWrite.Store(time.Now().UnixNano())
	st.s.eng.goLive(st.s, floor)
}

// Remove unregisters and ends the stream: queued frames are dropped, a
// hijacked connection is closed and Done is closed. reason is one of the
// Reason constants. It does not wait for a writer in the middle of a write
// to the stream (the write fails on the closed connection). Safe for
// concurrent use and to call more than once: only the first counts; after
// it, FlushHTTP reports false.
func (st Stream) Remove(reason string) {
	st.s.eng.remove(st.s, reason)
}

// Wake receives when frames wait to be written with FlushHTTP; nil for a
// hijacked stream. Handler path only.
func (st Stream) Wake() <-chan struct{} { return st.s.wake }

// Done is closed when the stream is removed; nil for a hijacked stream.
func (st Stream) Done() <-chan struct{} { return st.s.done }

// FlushHTTP writes the queued frames through w (the handler path), each
// write bounded by Options.WriteTimeout, and flushes them. It reports
// false when the stream has ended (removed, a write failed, or a last
// frame was written): the handler returns. Call it on the handler's
// goroutine only, after a receive from Wake.
func (st Stream) FlushHTTP(w http.ResponseWriter, rc *http.ResponseController) bool {
	return st.s.flushHTTP(w, rc)
}

// Waiter is a long-poll: registered like a stream, so that nothing
// published from its registration on is missed, but never written to. It
// only notices that events for its filter arrived. It has no heartbeats
// and counts against MaxConnections and MaxPerClient. It is a small value;
// copies refer to the same waiter. Close and Done are safe for concurrent
// use; Notify and Ack belong to the one goroutine that waits.
type Waiter struct{ s *subscriber }

// Watch registers a long-poll for the events f selects, live at once.
// Errors as Register. The caller must Close it. Safe for concurrent use.
func (e *Engine) Watch(f bus.Filter, client string, anonymous bool) (Waiter, error) {
	s := &subscriber{eng: e, filter: f, client: client, anonymous: anonymous, idx: -1, waiter: true,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if _, err := e.register(s); err != nil {
		return Waiter{}, err
	}
	e.goLive(s, nil)
	return Waiter{s}, nil
}

// Notify receives when events for the filter (or the drain's last frame)
// arrived since the last Ack. It does not receive again until Ack.
func (w Waiter) Notify() <-chan struct{} { return w.s.wake }

// Ack forgets what arrived, so Notify can receive again for what comes
// next. Call it after each receive from Notify.
func (w Waiter) Ack() {
	w.s.mu.Lock()
	w.s.eng.unhold(w.s, w.s.queue)
	clear(w.s.queue)
	w.s.queue = w.s.queue[:0]
	w.s.mu.Unlock()
	w.s.release()
}

// Done is closed when the engine removed the waiter: evicted because it
// fell MaxQueue events behind, drained, or shut down.
func (w Waiter) Done() <-chan struct{} { return w.s.done }

// Close unregisters the waiter. Safe to call more than once.
func (w Waiter) Close() { w.s.eng.remove(w.s, ReasonClosed) }
