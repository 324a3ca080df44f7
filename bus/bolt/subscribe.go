package bolt

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/refcast/refcast/bus"
)

// Subscribe implements bus.Bus. One goroutine per subscription reads the
// file after each publish, up to the acknowledged heads; a slow reader only
// delays itself. Bus.Close waits for these goroutines.
func (b *Bus) Subscribe(ctx context.Context, from bus.Heads) (bus.Subscription, error) {
	if len(from) != b.opts.Partitions {
		return nil, fmt.Errorf("%w: subscribe from %d partitions, bus has %d", bus.ErrInvalid, len(from), b.opts.Partitions)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &subscription{c: make(chan bus.Message), cancel: cancel, done: make(chan struct{})}
	pos := append(bus.Heads(nil), from...)
	b.subs.Add(1)
	go func() {
		defer b.subs.Done()
		s.run(ctx, b, pos)
	}()
	return s, nil
}

type subscription struct {
	c      chan bus.Message   // owned by run, which closes it
	cancel context.CancelFunc // set at construction
	done   chan struct{}      // closed when run returns
}

func (s *subscription) C() <-chan bus.Message { return s.c }

func (s *subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

func (s *subscription) run(ctx context.Context, b *Bus, pos bus.Heads) {
	defer close(s.done)
	defer close(s.c)
	for {
		heads, wake, err := b.snapshot()
		if err != nil {
			return
		}
		for pi := range pos {
			for {
				msg, ok, err := s.next(ctx, b, pi, &pos[pi], heads[pi])
				if err != nil {
					// The file could not be read: end the feed; the
					// reader resubscribes from its own position.
					return
				}
				if !ok {
					break
				}
				select {
				case s.c <- msg:
				case <-ctx.Done():
					return
				case <-b.done:
					return
				}
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		case <-b.done:
			return
		}
	}
}

// next returns the partition's next message after *at, given the
// acknowledged head h, and advances *at. A position from another epoch,
// trimmed, or ahead of the head gets a Reset to the current head.
func (s *subscription) next(ctx context.Context, b *Bus, pi int, at *bus.PartitionHead, h bus.PartitionHead) (bus.Message, bool, error) {
	if at.Epoch != h.Epoch || at.Last+1 < h.First || at.Last > h.Last {
		*at = h
		return bus.Message{Partition: pi, Reset: true, Head: h}, true, nil
	}
	if at.Last == h.Last {
		return bus.Message{}, false, nil // caught up
	}
	var evs []bus.Event
	err := b.view(ctx, "read feed", func(tx *bolt.Tx) error {
		var err error
		evs, err = readEvents(tx, pi, h, at.Epoch, at.Last, DefaultFeedBatch)
		return err
	})
	if errors.Is(err, bus.ErrTruncated) {
		// Trimmed by a publish after h was taken: reset to the newer head.
		heads, _, err := b.snapshot()
		if err != nil {
			return bus.Message{}, false, err
		}
		*at = heads[pi]
		return bus.Message{Partition: pi, Reset: true, Head: heads[pi]}, true, nil
	}
	if err != nil || len(evs) == 0 {
		return bus.Message{}, false, err
	}
	at.Last = evs[len(evs)-1].Seq
	return bus.Message{Partition: pi, Events: evs}, true, nil
}
