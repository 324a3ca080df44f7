package bolt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

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

// Publish implements bus.Bus. The push is in the log, synced, before
// Publish returns and before any reader or subscriber sees it.
//
// Concurrent publishes share commits (group commit): each queues its push,
// and whoever holds the write lock commits everything queued in one log
// record and one fdatasync, so throughput grows with the number of
// publishers instead of being one sync per push.
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

// commit makes a batch of pushes durable and visible, and completes every
// request. Called with wmu held.
//
// The batch is one record appended to the log (wal.go) and synced; the
// pushes join the tail that readers merge with the file, and a flush
// writes the tail to bbolt once it holds flushPushes pushes or the log
// flushBytes. A batch that cannot be logged (larger than the log, or the log
// failed) is flushed with the tail instead, as one bbolt commit.
func (b *Bus) commit(batch []*pubReq) {
	defer func() {
		for _, r := range batch {
			close(r.ch)
		}
	}()
	fail := func(err error) {
		for _, r := range batch {
			r.evs, r.err = nil, err
		}
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		fail(bus.ErrClosed)
		return
	}
	if b.stopped != nil {
		fail(b.stopped)
		return
	}

	now := b.opts.Now()
	heads := make(map[int]bus.PartitionHead) // the batch's partitions after it
	added := make(map[string]pushPos, len(batch))
	var entries []*entry
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
		h, ok := heads[pi]
		if !ok {
			h = b.heads[pi] // written under wmu, which we hold
		}
		e := &entry{p: statePush(p), pi: pi, first: h.Last + 1, vals: make([][]byte, len(evs))}
		for i := range evs {
			evs[i].Partition, evs[i].Seq = pi, e.first+uint64(i)
			evs[i].Prev, evs[i].Chain = h.Chain, bus.ChainNext(h.Chain, p.ID)
			h.Chain = evs[i].Chain
			v, err := encodeEvent(&evs[i], now)
			if err != nil {
				fail(fmt.Errorf("publish %s: %w", p.ID, err))
				return
			}
			e.vals[i] = v
		}
		h.Last, e.chain = e.last(), h.Chain
		heads[pi] = h
		e.evs = slices.Clone(evs) // evs go back to the caller
		entries = append(entries, e)
		e.order = b.lastOrder + uint64(len(entries))
		added[p.ID] = pushPos{order: e.order, first: e.first, pi: uint32(pi)}
	}
	if len(entries) == 0 {
		return // every push was published before
	}
	if err := b.trimHeads(heads, now); err != nil {
		fail(err)
		return
	}
	flushed, err := b.log(entries, heads)
	if err != nil {
		fail(err)
		return
	}

	for id, pos := range added {
		b.pushes[id] = pos
	}
	b.lastOrder = entries[len(entries)-1].order
	if b.firstOrder == 0 {
		b.firstOrder = entries[0].order
	}
	b.trimWindow()
	appended := make(map[int][]bus.Event, len(heads)) // per partition, in Seq order
	for _, e := range entries {
		appended[e.pi] = append(appended[e.pi], e.evs...)
	}
	b.mu.Lock()
	for pi, h := range heads {
		b.heads[pi] = h
		b.recent[pi] = recentEvents{epoch: h.Epoch, last: h.Last, evs: appended[pi]}
	}
	if !flushed {
		// Logged: readers take them from the tail. Appending in place is
		// safe: a reader holds a prefix of it and never looks past its
		// length.
		b.tail = append(b.tail, entries...)
	}
	close(b.notify)
	b.notify = make(chan struct{})
	b.mu.Unlock()

	if len(b.tail) >= b.opts.flushPushes || b.w.off >= min(b.w.size/2, flushBytes) {
		// The pushes are durable in the log: a failed flush is retried
		// by the next publish, and one whose record would not fit
		// waits for it.
		_ = b.flush(nil, nil)
	}
}

// statePush is what the log and the tail keep of p: what applyState and
// overlay read. The events, commits included, are kept in their stored
// form; the rest of the push would double what a push with commit
// subjects costs the log and the heap.
func statePush(p *bus.Push) *bus.Push {
	s := &bus.Push{ID: p.ID, Repo: p.Repo, Seed: p.Seed, Whole: p.Whole, Head: p.Head, Updates: make([]bus.RefUpdate, len(p.Updates))}
	for i, u := range p.Updates {
		s.Updates[i] = bus.RefUpdate{Ref: u.Ref, Old: u.Old, New: u.New, Peeled: u.Peeled}
	}
	return s
}

// trimWindow forgets the oldest push ids beyond PushIDs once there are
// more than PushIDs plus the slack, as trimPushIDs does in the file (at
// the next flush). Scanning the map costs ~1 ms at the default 100,000 ids,
// once every 1,024 publishes. Called with wmu held.
func (b *Bus) trimWindow() {
	keep := uint64(b.opts.PushIDs)
	if b.lastOrder-b.firstOrder < keep+uint64(pushIDSlack(b.opts.PushIDs)) {
		return
	}
	oldest := b.lastOrder - keep + 1
	for id, pos := range b.pushes {
		if pos.order < oldest {
			delete(b.pushes, id)
		}
	}
	b.firstOrder = oldest
}

// trimHeads moves the First of each partition in heads past the events
// beyond the count and age bounds, as a commit to bbolt would trim them.
// The file is trimmed by the next flush.
func (b *Bus) trimHeads(heads map[int]bus.PartitionHead, now time.Time) error {
	for pi, h := range heads {
		if h.Last >= uint64(b.opts.History) {
			h.First = max(h.First, h.Last-uint64(b.opts.History)+1)
		}
		heads[pi] = h
	}
	if b.opts.MaxAge <= 0 {
		return nil
	}
	cutoff := now.Add(-b.opts.MaxAge)
	b.mu.Lock()
	tail, applied := b.tail, slices.Clone(b.applied)
	b.mu.Unlock()
	return b.view(context.Background(), "trim history", func(tx *bolt.Tx) error {
		for pi, h := range heads {
			var part *partition
			for h.First <= h.Last {
				var at time.Time
				if h.First <= applied[pi] {
					if part == nil {
						var err error
						if part, err = openPartition(tx, pi); err != nil {
							return err
						}
					}
					v := part.events.Get(u64(h.First))
					if v == nil {
						return fmt.Errorf("partition %d: event %d is missing", pi, h.First)
					}
					var err error
					if at, err = publishedAt(v); err != nil {
						return err
					}
				} else {
					e := tailEntry(tail, pi, h.First)
					if e == nil {
						break // this batch's: published now
					}
					at = publishedOf(e)
				}
				if !at.Before(cutoff) {
					break
				}
				h.First++
			}
			heads[pi] = h
		}
		return nil
	})
}

// tailEntry is the entry of the tail holding event seq of partition pi.
func tailEntry(tail []*entry, pi int, seq uint64) *entry {
	for _, e := range tail {
		if e.pi == pi && e.first <= seq && seq <= e.last() {
			return e
		}
	}
	return nil
}

// log makes entries durable: appended to the log, or, when they cannot
// be, flushed to bbolt with the tail (flushed is then true). heads are
// their partitions' heads after them. Called with wmu held.
func (b *Bus) log(entries []*entry, heads map[int]bus.PartitionHead) (flushed bool, err error) {
	if eventBytes(entries) >= b.w.size { // no record to build: a seed can be tens of MB
		return true, b.flush(entries, heads)
	}
	rec, err := encodeRecord(entries)
	if err != nil {
		return false, err
	}
	if len(rec) > int(b.w.size) {
		return true, b.flush(entries, heads)
	}
	if b.w.off+int64(len(rec)) > b.w.size {
		if err := b.flush(nil, nil); err != nil {
			return false, err
		}
	}
	if err := b.w.append(sealRecord(rec, b.w.gen)); err != nil {
		// The batch is committed to bbolt instead, with the tail: that
		// also moves the file past this generation, so no Open replays
		// the record should it have reached the file all the same (a
		// write that reached the page cache, then a failed fdatasync).
		// The log's next generation starts at offset 0, where the next
		// publish tries it again: a log that failed for a while (a full
		// disk since cleared) costs a bbolt commit per publish only
		// meanwhile. No back-off: a full disk fails a write at once, and
		// a device whose syncs hang would hang bbolt's commit the same.
		if !b.w.failing {
			b.opts.Logger.Warn("the embedded bus's log failed: publishes are committed to the data file directly (slower) until it works again",
				"log", b.w.f.Name(), "err", err)
		}
		b.w.failing = true
		if ferr := b.flush(entries, heads); ferr != nil {
			return true, fmt.Errorf("%w (the log had failed first: %w)", ferr, err)
		}
		return true, nil
	}
	if b.w.failing {
		b.w.failing = false
		b.opts.Logger.Info("the embedded bus's log works again", "log", b.w.f.Name())
	}
	return false, nil
}

// eventBytes is the size of entries' stored events, a lower bound of their
// record's.
func eventBytes(entries []*entry) int64 {
	var n int64
	for _, e := range entries {
		for _, v := range e.vals {
			n += int64(len(v))
		}
	}
	return n
}

// flush writes the tail, then extra, to bbolt in one transaction recording
// the log's generation as applied, and starts the log's next generation.
// heads are extra's partitions' heads after it (their First is where the
// file is trimmed to). Called with wmu held.
func (b *Bus) flush(extra []*entry, heads map[int]bus.PartitionHead) error {
	b.mu.Lock()
	tail := b.tail
	b.mu.Unlock()
	entries := append(slices.Clip(tail), extra...)
	firsts := make(map[int]uint64, len(heads)+len(entries))
	for _, e := range entries {
		firsts[e.pi] = b.heads[e.pi].First
	}
	for pi, h := range heads {
		firsts[pi] = h.First
	}
	var forgotten []pushPlace
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		forgotten, err = applyEntries(tx, entries, b.w.gen, b.opts.PushIDs, func(p *partition) error {
			return p.trimTo(firsts[p.pi])
		})
		if err == nil && b.opts.flushErr != nil && !b.opts.flushLands {
			err = b.opts.flushErr
		}
		return err
	})
	if err == nil && b.opts.flushErr != nil && b.opts.flushLands {
		err = b.opts.flushErr
	}
	if err != nil {
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			return bus.ErrClosed
		}
		// bbolt rolled back. If the failure came before its meta page was
		// written, nothing reached the file: the tail stays for the next
		// flush. If after (the meta page's fdatasync failed), the file
		// shows the commit but it may not be durable, and the log, whose
		// next generation would overwrite this one's records, is the only
		// copy that is: stop publishing until a restart replays it (Open
		// writes the records again unless the file holds them).
		landed, lerr := b.flushLanded()
		if lerr == nil && !landed {
			return fmt.Errorf("publish to %s: %w: %w", b.path, bus.ErrUnavailable, err)
		}
		b.mu.Lock()
		b.stopped = fmt.Errorf("bus %s: %w: a write to the file failed in a way that may have reached it (%w); restart the node: Open replays the log where the file lacks it", b.path, bus.ErrUnavailable, err)
		close(b.notify) // readers waiting for the file to match memory
		b.notify = make(chan struct{})
		b.mu.Unlock()
		return b.stopped
	}
	for _, f := range forgotten {
		// The file forgets only what memory forgot already, unless the id
		// was published again since, at a newer place: keep that one.
		if pos, ok := b.pushes[f.id]; ok && pos.order == f.order {
			delete(b.pushes, f.id)
		}
	}
	b.mu.Lock()
	for _, e := range entries {
		b.applied[e.pi] = e.last()
	}
	b.tail = nil
	b.mu.Unlock()
	b.w.next()
	return nil
}

// flushLanded reports whether the log's current generation is in the file
// after a failed flush. Called with wmu held.
func (b *Bus) flushLanded() (bool, error) {
	var gen uint64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		gen, err = walGen(tx)
		return err
	})
	return gen >= b.w.gen, err
}

// applyEntries writes entries to the file in order, records gen as the
// log generation applied, trims each partition written with trim and the
// push id window to keep, and returns the ids the window forgot. A
// generation the file already holds is not written twice.
func applyEntries(tx *bolt.Tx, entries []*entry, gen uint64, keep int, trim func(*partition) error) ([]pushPlace, error) {
	applied, err := walGen(tx)
	if err != nil {
		return nil, err
	}
	if applied >= gen {
		return nil, nil
	}
	order := tx.Bucket(bktPushOrder)
	parts := map[int]*partition{}
	var written []*partition
	for _, e := range entries {
		part := parts[e.pi]
		if part == nil {
			if part, err = openPartition(tx, e.pi); err != nil {
				return nil, err
			}
			parts[e.pi] = part
			written = append(written, part)
		}
		if e.first != part.head.Last+1 || prevChain(e.vals[0]) != part.head.Chain {
			return nil, logError{fmt.Errorf("logged push %s starts at %d/%d after chain %x, the file's head is at %d, chain %x",
				e.p.ID, e.pi, e.first, prevChain(e.vals[0]), part.head.Last, part.head.Chain)}
		}
		for i, v := range e.vals {
			if err := part.events.Put(u64(e.first+uint64(i)), v); err != nil {
				return nil, err
			}
		}
		part.head.Last, part.head.Chain = e.last(), e.chain
		if err := applyState(part.refs, e.p); err != nil {
			return nil, err
		}
		n := e.order
		if n == 0 { // read back from the log: placed now, in log order
			if n, err = order.NextSequence(); err != nil {
				return nil, err
			}
		} else if n > order.Sequence() {
			if err := order.SetSequence(n); err != nil {
				return nil, err
			}
		}
		if err := order.Put(u64(n), pushValue([]byte(e.p.ID), e.pi, e.first)); err != nil {
			return nil, err
		}
	}
	for _, part := range written {
		if err := part.putHead(); err != nil {
			return nil, err
		}
		if err := trim(part); err != nil {
			return nil, err
		}
	}
	if err := tx.Bucket(bktMeta).Put(keyWALGen, u64(gen)); err != nil {
		return nil, err
	}
	return trimPushIDs(tx, keep, pushIDSlack(keep))
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
