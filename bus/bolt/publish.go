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

// pubReq is one Publish waiting for a commit.
type pubReq struct {
	p   *bus.Push
	pi  int
	evs []bus.Event
	err error
	ch  chan struct{} // closed when evs/err are final
}

// Publish implements bus.Bus. The push is committed to the file (fsynced)
// before Publish returns and before any reader or subscriber sees it.
//
// Concurrent publishes share commits (group commit): each queues its push,
// and whoever holds the write lock commits everything queued in one
// transaction and one fsync, so throughput grows with the number of
// publishers instead of being one fsync per push.
func (b *Bus) Publish(ctx context.Context, p *bus.Push) ([]bus.Event, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req := &pubReq{p: p, pi: bus.PartitionOf(p.Repo, b.opts.Partitions), evs: p.Events(), ch: make(chan struct{})}
	b.pmu.Lock()
	b.pending = append(b.pending, req)
	b.pmu.Unlock()

	b.wmu.Lock()
	defer b.wmu.Unlock()
	select {
	case <-req.ch: // committed by the previous holder of wmu
		return req.evs, req.err
	default:
	}
	b.pmu.Lock()
	batch := b.pending
	b.pending = nil
	b.pmu.Unlock()
	b.commit(batch)
	return req.evs, req.err
}

// commit writes a batch of pushes in one transaction and completes every
// request. Called with wmu held.
func (b *Bus) commit(batch []*pubReq) {
	defer func() {
		for _, r := range batch {
			close(r.ch)
		}
	}()
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		for _, r := range batch {
			r.evs, r.err = nil, bus.ErrClosed
		}
		return
	}

	heads := make(map[int]bus.PartitionHead)
	appended := make(map[int][]bus.Event) // per partition, in Seq order
	// The batch's push ids and those the window forgets reach b.pushes
	// only once the commit succeeded.
	added := make(map[string]pushPos, len(batch))
	var forgotten []string
	err := b.db.Update(func(tx *bolt.Tx) error {
		order := tx.Bucket(bktPushOrder)
		now := b.opts.Now()
		for _, r := range batch {
			p, evs, pi := r.p, r.evs, r.pi
			dup, ok := added[p.ID]
			if !ok {
				dup, ok = b.pushes[p.ID]
			}
			if ok {
				for i := range evs {
					evs[i].Partition, evs[i].Seq = int(dup.pi), dup.first+uint64(i)
				}
				continue
			}
			part, err := openPartition(tx, pi)
			if err != nil {
				return err
			}
			next := part.head.Last + 1
			for i := range evs {
				evs[i].Partition, evs[i].Seq = pi, next+uint64(i)
				evs[i].Prev, evs[i].Chain = part.head.Chain, bus.ChainNext(part.head.Chain, p.ID)
				part.head.Chain = evs[i].Chain
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
			n, err := order.NextSequence()
			if err != nil {
				return err
			}
			if err := order.Put(u64(n), pushValue([]byte(p.ID), pi, next)); err != nil {
				return err
			}
			added[p.ID] = pushPos{order: n, first: next, pi: uint32(pi)}
			heads[pi] = part.head
			appended[pi] = append(appended[pi], evs...)
		}
		var err error
		forgotten, err = trimPushIDs(tx, b.opts.PushIDs, pushIDSlack(b.opts.PushIDs))
		return err
	})
	if err != nil {
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			err = bus.ErrClosed
		} else {
			// bbolt rolled back, but if the failure came after the meta
			// page was written the commit may be visible anyway: take the
			// heads as the file now shows them, so readers and the
			// watermark agree. A client retrying with the same push id
			// gets the right answer either way.
			done := map[int]bool{}
			for _, r := range batch {
				if !done[r.pi] {
					done[r.pi] = true
					b.reloadHead(r.pi)
				}
			}
			b.reloadPushes()
			err = fmt.Errorf("publish to %s: %w: %w", b.path, bus.ErrUnavailable, err)
		}
		for _, r := range batch {
			r.evs, r.err = nil, err
		}
		return
	}
	for id, pos := range added {
		b.pushes[id] = pos
	}
	for _, id := range forgotten {
		delete(b.pushes, id)
	}
	b.mu.Lock()
	for pi, h := range heads {
		b.heads[pi] = h
		b.recent[pi] = recentEvents{epoch: h.Epoch, last: h.Last, evs: appended[pi]}
	}
	close(b.notify)
	b.notify = make(chan struct{})
	b.mu.Unlock()
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

// applyState updates the repo's ref state and its reserved git fields
// (bus.GitFields), kept in the same bucket.
func applyState(refs *bolt.Bucket, p *bus.Push) error {
	name := []byte(p.Repo)
	if p.ReplacesState() && refs.Bucket(name) != nil {
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
	for _, f := range p.GitFields() {
		if f[1] == "" {
			err = rb.Delete([]byte(f[0]))
		} else {
			err = rb.Put([]byte(f[0]), []byte(f[1]))
		}
		if err != nil {
			return err
		}
	}
	// The reserved fields start with a NUL byte, so the first key at or
	// after 0x01 is the first ref: none left, no state (fields included).
	if k, _ := rb.Cursor().Seek([]byte{1}); k == nil {
		return refs.DeleteBucket(name)
	}
	return nil
}

// reloadPushes re-reads the push id window after a failed commit, which
// may have reached the file anyway (see commit). If it cannot be read, the
// window stays as of the last commit. Called with wmu held.
func (b *Bus) reloadPushes() {
	var pushes map[string]pushPos
	if err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		pushes, err = loadPushes(tx)
		return err
	}); err == nil {
		b.pushes = pushes
	}
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
