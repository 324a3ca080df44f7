package bolt

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/refcast/refcast/bus"
)

// Subscribe implements bus.Bus. One goroutine per subscription (a bus.Feed)
// reads the file after each publish, up to the acknowledged heads; a slow
// reader only delays itself. Bus.Close waits for these goroutines.
func (b *Bus) Subscribe(ctx context.Context, from bus.Heads) (bus.Subscription, error) {
	if len(from) != b.opts.Partitions {
		return nil, fmt.Errorf("%w: subscribe from %d partitions, bus has %d", bus.ErrInvalid, len(from), b.opts.Partitions)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
	return bus.StartFeed(ctx, b.done, &b.subs, from, &feedSource{b: b}), nil
}

// feedSource reads one feed's messages from the file. Owned by the feed's
// goroutine.
type feedSource struct {
	b *Bus
	s state // as of the last Wake
}

// Wake implements bus.FeedSource, taking the watermark the next pass reads
// up to.
func (s *feedSource) Wake() (<-chan struct{}, error) {
	st, err := s.b.state()
	s.s = st
	return st.wake, err
}

// Next implements bus.FeedSource, given the acknowledged head of the last
// Wake. A position from another epoch, trimmed, or ahead of the head gets a
// Reset to the current head.
func (s *feedSource) Next(ctx context.Context, pi int, at *bus.PartitionHead) (bus.Message, bool, error) {
	b, h := s.b, s.s.heads[pi]
	if at.Epoch != h.Epoch || at.Last+1 < h.First || at.Last > h.Last {
		*at = h
		return bus.Message{Partition: pi, Reset: true, Head: h}, true, nil
	}
	if at.Last == h.Last {
		return bus.Message{}, false, nil // caught up
	}
	if r := s.b.recentOf(pi); r.epoch == h.Epoch && r.last == h.Last && len(r.evs) > 0 &&
		r.last-uint64(len(r.evs)) == at.Last && len(r.evs) <= DefaultFeedBatch {
		// What the last commit appended, and nothing more: from memory.
		at.Last = h.Last
		return bus.Message{Partition: pi, Events: slices.Clone(r.evs)}, true, nil
	}
	evs, err := b.events(ctx, "read feed", s.s, pi, at.Epoch, at.Last, DefaultFeedBatch)
	if errors.Is(err, bus.ErrTruncated) {
		// Trimmed by a flush after h was taken: reset to the newer head.
		st, err := b.state()
		if err != nil {
			return bus.Message{}, false, err
		}
		s.s = st // the feed's watermark moves with it, not back at the next call
		*at = st.heads[pi]
		return bus.Message{Partition: pi, Reset: true, Head: st.heads[pi]}, true, nil
	}
	if err != nil || len(evs) == 0 {
		return bus.Message{}, false, err
	}
	at.Last = evs[len(evs)-1].Seq
	return bus.Message{Partition: pi, Events: evs}, true, nil
}

// recentOf returns what the last commit appended to partition pi.
func (b *Bus) recentOf(pi int) recentEvents {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.recent[pi]
}
