package bolt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/refcast/refcast/bus"
)

// errDuplicate rolls back the transaction of a push id already published.
var errDuplicate = errors.New("duplicate push id")

// Publish implements bus.Bus. The push is committed to the file (fsynced)
// before Publish returns and before any reader or subscriber sees it.
func (b *Bus) Publish(ctx context.Context, p *bus.Push) ([]bus.Event, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pi := bus.PartitionOf(p.Repo, b.opts.Partitions)
	evs := p.Events()

	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, bus.ErrClosed
	}

	var head bus.PartitionHead
	var dupPart int
	var dupFirst uint64
	err := b.db.Update(func(tx *bolt.Tx) error {
		pushes := tx.Bucket(bktPushes)
		if v := pushes.Get([]byte(p.ID)); v != nil {
			if len(v) != 20 {
				return fmt.Errorf("push id %s: stored position is malformed", p.ID)
			}
			dupPart, dupFirst = int(binary.BigEndian.Uint32(v)), binary.BigEndian.Uint64(v[4:])
			return errDuplicate
		}
		part, err := openPartition(tx, pi)
		if err != nil {
			return err
		}
		now := b.opts.Now()
		next := part.head.Last + 1
		for i := range evs {
			evs[i].Partition, evs[i].Seq = pi, next+uint64(i)
			v, err := encodeEvent(&evs[i], now)
			if err != nil {
				return err
			}
			if err := part.events.Put(u64(evs[i].Seq), v); err != nil {
				return err
			}
		}
		part.head.Last = next + uint64(len(evs)) - 1
		if err := part.putHead(); err != nil {
			return err
		}
		if err := applyState(part.refs, p); err != nil {
			return err
		}
		if err := part.trim(b.opts.History, b.opts.MaxAge, now); err != nil {
			return err
		}
		if err := rememberPush(tx, p.ID, pi, next); err != nil {
			return err
		}
		if err := trimPushIDs(tx, b.opts.PushIDs); err != nil {
			return err
		}
		head = part.head
		return nil
	})
	switch {
	case errors.Is(err, errDuplicate):
		for i := range evs {
			evs[i].Partition, evs[i].Seq = dupPart, dupFirst+uint64(i)
		}
		return evs, nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return nil, bus.ErrClosed
	case err != nil:
		// bbolt rolled back, but if the failure came after the meta page was
		// written the commit may be visible anyway: take the heads as the
		// file now shows them, so readers and the watermark agree. A client
		// retrying with the same push id gets the right answer either way.
		b.reloadHead(pi)
		return nil, fmt.Errorf("publish %s to %s: %w: %w", p.ID, b.path, bus.ErrUnavailable, err)
	}

	b.mu.Lock()
	b.heads[pi] = head
	close(b.notify)
	b.notify = make(chan struct{})
	b.mu.Unlock()
	return evs, nil
}

// reloadHead re-reads a partition's head after a failed commit and wakes
// the readers. Called with wmu held.
func (b *Bus) reloadHead(pi int) {
	var head bus.PartitionHead
	err := b.db.View(func(tx *bolt.Tx) error {
		part, err := openPartition(tx, pi)
		if err == nil {
			head = part.head
		}
		return err
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		b.heads[pi] = head
	}
	close(b.notify)
	b.notify = make(chan struct{})
}

// applyState updates the repo's ref state.
func applyState(refs *bolt.Bucket, p *bus.Push) error {
	name := []byte(p.Repo)
	if p.Seed && refs.Bucket(name) != nil {
		if err := refs.DeleteBucket(name); err != nil {
			return err
		}
	}
	rb, err := refs.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	for _, u := range p.Updates {
		if bus.IsZeroID(u.New) {
			err = rb.Delete([]byte(u.Ref))
		} else {
			err = rb.Put([]byte(u.Ref), []byte(u.New))
		}
		if err != nil {
			return err
		}
	}
	if k, _ := rb.Cursor().First(); k == nil {
		return refs.DeleteBucket(name)
	}
	return nil
}

// rememberPush records a push id's position at the end of the window.
func rememberPush(tx *bolt.Tx, id string, pi int, first uint64) error {
	order := tx.Bucket(bktPushOrder)
	n, err := order.NextSequence()
	if err != nil {
		return err
	}
	v := make([]byte, 0, 20)
	v = binary.BigEndian.AppendUint32(v, uint32(pi))
	v = binary.BigEndian.AppendUint64(v, first)
	v = binary.BigEndian.AppendUint64(v, n)
	if err := tx.Bucket(bktPushes).Put([]byte(id), v); err != nil {
		return err
	}
	return order.Put(u64(n), []byte(id))
}

// newEpoch returns a random non-zero epoch of 63 bits (safe in JSON and in
// Redis's Lua, like the other buses' epochs).
func newEpoch() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if e := binary.BigEndian.Uint64(b[:]) >> 1; e != 0 {
			return e
		}
	}
}
