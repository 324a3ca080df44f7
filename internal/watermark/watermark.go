// Package watermark finds the cursor that is safe to store for a stream
// whose frames finish out of order: the cursor of the latest frame such
// that it and every frame before it are finished. `refcast watch` (frames
// run per repo, some debounced) and `refcast relay` (each update owed to
// several targets, each target and repo its own queue) store it, so a
// restart resumes from a position before which nothing is owed. The
// newest finished cursor may not be stored while an older frame is still
// pending: a restart from it would skip that frame.
//
// It bounds the frames pending: Reserve blocks while the maximum are
// pending, which stops the owner's reader; the node then drops the stream
// and the client resumes from its cursor.
//
// It is not a lock: a Mark is guarded by its owner's mutex (every method
// but Reserve, Unreserve and Changed needs it held), so the owner can keep
// its own state consistent with the safe cursor, as the relay does with
// the refs it delivered, updated by the pop hook as entries leave.
package watermark

import (
	"context"
	"errors"
)

// ErrStopped is returned by Reserve when its stop channel closes.
var ErrStopped = errors.New("watermark: stopped")

// Mark is the pending frames of one stream and the safe cursor.
type Mark[T any] struct {
	slots   chan struct{} // one token per reserved or pending entry; set at construction
	changed chan struct{} // signalled when entries leave; set at construction
	pop     func(T)       // called as each entry leaves, in order; set at construction

	base    uint64     // seq of pending[0]; guarded by the owner
	pending []entry[T] // guarded by the owner
	safe    string     // guarded by the owner
}

type entry[T any] struct {
	cursor string
	left   int // Done calls still needed
	val    T
}

// New returns a Mark holding at most max pending entries (max > 0), whose
// safe cursor starts at start. pop, if not nil, is called with the owner's
// lock held for each entry as it leaves, in stream order.
func New[T any](max int, start string, pop func(T)) *Mark[T] {
	return &Mark[T]{
		slots: make(chan struct{}, max), changed: make(chan struct{}, 1),
		pop: pop, base: 1, safe: start,
	}
}

// Reserve takes room for one entry, blocking while max entries are pending
// (or reserved) until ctx is done (its error) or stop is closed
// (ErrStopped; a nil stop never is).
// It needs no lock, and must not be called with the owner's lock held: the
// entries that would free room leave under it. Each Reserve is followed
// by one Add or one Unreserve.
func (m *Mark[T]) Reserve(ctx context.Context, stop <-chan struct{}) error {
	select {
	case m.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return ErrStopped
	}
}

// Unreserve gives back room taken by Reserve and not used by Add.
func (m *Mark[T]) Unreserve() { <-m.slots }

// Add appends the next entry, with its cursor (empty: a frame with no
// position of its own), the number of Done calls that finish it (0: it is
// finished now) and a value for the pop hook, and returns its sequence
// number. It uses the room of one Reserve.
func (m *Mark[T]) Add(cursor string, left int, v T) uint64 {
	m.pending = append(m.pending, entry[T]{cursor: cursor, left: left, val: v})
	seq := m.base + uint64(len(m.pending)) - 1
	if left == 0 {
		m.advance()
	}
	return seq
}

// Done counts one finished part of each entry seqs names (an entry named
// twice counts twice), then lets the leading finished entries leave.
func (m *Mark[T]) Done(seqs ...uint64) {
	for _, seq := range seqs {
		m.pending[seq-m.base].left--
	}
	m.advance()
}

// advance lets the leading finished entries leave: the safe cursor moves
// to the last cursor among them, their room is freed and Changed is
// signalled.
func (m *Mark[T]) advance() {
	n := 0
	for n < len(m.pending) && m.pending[n].left <= 0 {
		e := m.pending[n]
		if e.cursor != "" {
			m.safe = e.cursor
		}
		if m.pop != nil {
			m.pop(e.val)
		}
		n++
	}
	if n == 0 {
		return
	}
	clear(m.pending[:n])
	m.pending = m.pending[n:]
	m.base += uint64(n)
	for range n {
		<-m.slots
	}
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Safe returns the latest cursor such that it and every entry before it
// are finished.
func (m *Mark[T]) Safe() string { return m.safe }

// SetSafe sets the safe cursor; for a start from a stored cursor, before
// anything is added.
func (m *Mark[T]) SetSafe(cursor string) { m.safe = cursor }

// Len is the number of entries pending.
func (m *Mark[T]) Len() int { return len(m.pending) }

// Oldest returns the value of the oldest pending entry, if any.
func (m *Mark[T]) Oldest() (T, bool) {
	if len(m.pending) == 0 {
		var zero T
		return zero, false
	}
	return m.pending[0].val, true
}

// Changed is signalled (without blocking, coalesced) when entries leave,
// which is when the safe cursor and what the pop hook keeps may have
// moved. It needs no lock.
func (m *Mark[T]) Changed() <-chan struct{} { return m.changed }
