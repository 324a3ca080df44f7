package watch

import (
	"context"
	"sync"

	"github.com/refcast/refcast/internal/watermark"
)

// tracker finds the cursor that is safe to store: the id of the latest frame
// such that it and every frame before it were handled. Frames are handled
// out of order (different repos run concurrently, debounce delays some);
// internal/watermark keeps the order, shared with the relay.
//
// The number of frames in flight is bounded: add blocks when max are
// pending, which stops the reader; the server then drops the stream and the
// client resumes from its cursor. Safe for concurrent use.
type tracker struct {
	mu      sync.Mutex
	mark    *watermark.Mark[struct{}] // guarded by mu, but for Reserve and Changed
	changed <-chan struct{}           // signalled when the safe cursor may have moved; set at construction
}

func newTracker(max int, start string) *tracker {
	m := watermark.New[struct{}](max, start, nil)
	return &tracker{mark: m, changed: m.Changed()}
}

// add registers a frame with the given cursor (may be empty) and returns its
// sequence number. It blocks while the tracker is full.
func (t *tracker) add(ctx context.Context, cursor string) (uint64, error) {
	if err := t.mark.Reserve(ctx, nil); err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mark.Add(cursor, 1, struct{}{}), nil
}

// done marks frames seqs handled and advances the safe cursor past every
// leading handled frame.
func (t *tracker) done(seqs ...uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mark.Done(seqs...)
}

// safeCursor returns the latest cursor whose frames are all handled.
func (t *tracker) safeCursor() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mark.Safe()
}
