package bus

import (
	"context"
	"sync"
)

// FeedSource is what a bus whose subscribers read its history after each
// publish gives StartFeed. Both methods are called only by the feed's one
// goroutine, in turn, so a source may keep per-feed state without locks.
type FeedSource interface {
	// Wake returns a channel closed by the next publish. The feed calls it
	// before each pass over the partitions, so a publish during the pass
	// wakes the next one and none is missed. An error (ErrClosed) ends the
	// feed.
	Wake() (<-chan struct{}, error)
	// Next returns the partition's next message after *at and advances *at,
	// or false when *at is caught up. A position from another epoch, trimmed
	// away or ahead of the history gets a Reset to the current head. An
	// error ends the feed: the reader resubscribes from its own position.
	Next(ctx context.Context, partition int, at *PartitionHead) (Message, bool, error)
}

// Feed is a Subscription driven by one goroutine that loops over the
// partitions of a FeedSource: every partition is read until caught up, then
// the feed sleeps until the next publish. A slow reader delays only itself:
// the goroutine waits on the unbuffered channel, and the history is the
// buffer.
type Feed struct {
	c      chan Message       // owned by run, which closes it
	cancel context.CancelFunc // set at construction
	done   chan struct{}      // closed when run returns
}

var _ Subscription = (*Feed)(nil)

// StartFeed starts a feed of every message after from. It ends when ctx is
// cancelled, Close is called, closed is closed (the bus's own Close), or the
// source fails. wg, the bus's count of live feeds, is incremented now and
// decremented when the goroutine returns, so the bus's Close can wait for
// it; the caller must call StartFeed under the same lock that guards its
// closed state, so no feed starts after Close began waiting.
func StartFeed(ctx context.Context, closed <-chan struct{}, wg *sync.WaitGroup, from Heads, src FeedSource) *Feed {
	ctx, cancel := context.WithCancel(ctx)
	f := &Feed{c: make(chan Message), cancel: cancel, done: make(chan struct{})}
	pos := append(Heads(nil), from...)
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.run(ctx, closed, pos, src)
	}()
	return f
}

// C implements Subscription.
func (f *Feed) C() <-chan Message { return f.c }

// Close implements Subscription: it stops the goroutine and waits for it.
func (f *Feed) Close() error {
	f.cancel()
	<-f.done
	return nil
}

func (f *Feed) run(ctx context.Context, closed <-chan struct{}, pos Heads, src FeedSource) {
	defer close(f.done)
	defer close(f.c)
	for {
		wake, err := src.Wake()
		if err != nil {
			return
		}
		for pi := range pos {
			for {
				msg, ok, err := src.Next(ctx, pi, &pos[pi])
				if err != nil {
					return
				}
				if !ok {
					break
				}
				select {
				case f.c <- msg:
				case <-ctx.Done():
					return
				case <-closed:
					return
				}
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		case <-closed:
			return
		}
	}
}
