package watch

import (
	"context"
	"sync"
)

// tracker finds the cursor that is safe to store: the id of the latest frame
// such that it and every frame before it were handled. Frames are handled
// out of order (different repos run concurrently, debounce delays some), so
// the newest handled cursor may not be stored while an older frame is still
// pending: a restart from it would skip that frame.
//
// The number of frames in flight is bounded: add blocks when max are
// pending, which stops the reader; the server then drops the stream and the
// client resumes from its cursor. Safe for concurrent use.
type tracker struct {
	slots chan struct{} // one token per pending frame; set at construction

	mu      sync.Mutex
	base    uint64   // seq of pending[0]; guarded by mu
	pending []tentry // guarded by mu
	safe    string   // latest safe cursor; guarded by mu
	changed chan struct{}
}

type tentry struct {
	cursor string
	done   bool
}

func newTracker(max int, start string) *tracker {
	return &tracker{slots: make(chan struct{}, max), safe: start, base: 1, changed: make(chan struct{}, 1)}
}

// add registers a frame with the given cursor (may be empty) and returns its
// sequence number. It blocks while the tracker is full.
func (t *tracker) add(ctx context.Context, cursor string) (uint64, error) {
	select {
	case t.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending = append(t.pending, tentry{cursor: cursor})
	return t.base + uint64(len(t.pending)) - 1, nil
}

// done marks frame seq handled and advances the safe cursor past every
// leading handled frame.
func (t *tracker) done(seqs ...uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, seq := range seqs {
		t.pending[seq-t.base].done = true
	}
	n := 0
	for n < len(t.pending) && t.pending[n].done {
		if c := t.pending[n].cursor; c != "" {
			t.safe = c
		}
		n++
	}
	if n == 0 {
		return
	}
	clear(t.pending[:n])
	t.pending = t.pending[n:]
	t.base += uint64(n)
	for range n {
		<-t.slots
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// safeCursor returns the latest cursor whose frames are all handled.
func (t *tracker) safeCursor() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.safe
}
