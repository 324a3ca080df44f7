package bolt

// The file's layout. Integers are big-endian so keys sort numerically.
//
//	meta/format             "refcast-bus/2"
//	meta/partitions         u32
//	meta/walgen             u64: the last generation of the log (wal.go)
//	                        this file holds; absent until the first flush
//	parts/<u32 partition>/  one bucket per partition:
//	    head                u64 epoch, u64 first, u64 last, u64 chain at last
//	                        (files written before chains: 24 bytes, chain unknown)
//	    events/<u64 seq>    i64 unix seconds, u32 nanoseconds (published at),
//	                        0x00, u64 chain of the history before it (bus.ChainNext),
//	                        event JSON (files written before chains: no 0x00
//	                        and chain, the JSON's "{" follows the time)
//	    refs/<repo>/<ref>   object id; a repo bucket exists while it has refs
//	    refs/<repo>/\x00...  git fields (bus.GitFields: HEAD, peels), sorted before every ref
//	pushorder/<u64 order>   u32 partition, u64 first seq, push id: the
//	                        idempotency window, oldest first
//
// The window is looked up in memory (Bus.pushes, read at Open), not in the
// file: an index keyed by push id put every publish's id in a random leaf of
// a B+tree, a leaf and its branch pages more to rewrite in each commit (14.5
// page writes per publish with it, 11.5 without; BenchmarkPublish). Format 1
// had that index (pushes/<push id> → u32 partition, u64 first seq, u64 order,
// and pushorder/<u64 order> → push id); Open converts a format-1 file.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/refcast/refcast/bus"
)

const (
	format   = "refcast-bus/2"
	formatV1 = "refcast-bus/1" // converted by Open (migrateV1)
)

var (
	bktMeta      = []byte("meta")
	bktParts     = []byte("parts")
	bktPushes    = []byte("pushes") // format 1 only
	bktPushOrder = []byte("pushorder")
	bktEvents    = []byte("events")
	bktRefs      = []byte("refs")
	keyFormat    = []byte("format")
	keyParts     = []byte("partitions")
	keyHead      = []byte("head")
	keyWALGen    = []byte("walgen")
)

// formatError is a file that is readable but not usable as configured: not
// ours, a newer format, or made with another number of partitions.
type formatError string

func (e formatError) Error() string { return string(e) }

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// initLayout creates the buckets of a fresh file, with a new random epoch
// per partition, or checks an existing file's format and partition count.
func initLayout(tx *bolt.Tx, partitions int) error {
	meta := tx.Bucket(bktMeta)
	if meta == nil {
		if tx.Bucket(bktParts) != nil || tx.Bucket(bktPushes) != nil {
			return errors.New("bucket meta is missing")
		}
		if c := tx.Cursor(); func() bool { k, _ := c.First(); return k != nil }() {
			return formatError("the file is a bbolt database but not a refcast bus")
		}
		return createLayout(tx, partitions)
	}
	f := meta.Get(keyFormat)
	v1 := bytes.Equal(f, []byte(formatV1))
	if !v1 && !bytes.Equal(f, []byte(format)) {
		return formatError(fmt.Sprintf("format %q, this refcast reads %q and %q", f, format, formatV1))
	}
	n := meta.Get(keyParts)
	if len(n) != 4 {
		return errors.New("meta/partitions is malformed")
	}
	if got := int(binary.BigEndian.Uint32(n)); got != partitions {
		return formatError(fmt.Sprintf("the data directory was created with %d partitions, not %d; every node and hook of a deployment must use the same --partitions", got, partitions))
	}
	for _, name := range [][]byte{bktParts, bktPushOrder} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("bucket %s is missing", name)
		}
	}
	if v1 {
		return migrateV1(tx)
	}
	return nil
}

// migrateV1 converts a format-1 file: each pushorder entry takes the
// position from pushes, which goes. It runs in Open's transaction, so a
// crash leaves the file as it was.
func migrateV1(tx *bolt.Tx) error {
	pushes, order := tx.Bucket(bktPushes), tx.Bucket(bktPushOrder)
	if pushes == nil {
		return fmt.Errorf("bucket %s is missing", bktPushes)
	}
	type entry struct{ k, v []byte }
	var conv []entry // collected first: no Put while a cursor walks the bucket
	if err := order.ForEach(func(k, id []byte) error {
		pos := pushes.Get(id)
		if len(k) != 8 || len(pos) != 20 || binary.BigEndian.Uint64(pos[12:]) != binary.BigEndian.Uint64(k) {
			return fmt.Errorf("push id %q: stored position is malformed", id)
		}
		conv = append(conv, entry{k, pushValue(id, int(binary.BigEndian.Uint32(pos)), binary.BigEndian.Uint64(pos[4:]))})
		return nil
	}); err != nil {
		return err
	}
	for _, e := range conv {
		if err := order.Put(e.k, e.v); err != nil {
			return err
		}
	}
	if err := tx.DeleteBucket(bktPushes); err != nil {
		return err
	}
	return tx.Bucket(bktMeta).Put(keyFormat, []byte(format))
}

// pushPos is where a remembered push's events are, and its place in the
// window.
type pushPos struct {
	order uint64
	first uint64
	pi    uint32
}

// pushValue is a pushorder value.
func pushValue(id []byte, pi int, first uint64) []byte {
	v := make([]byte, 0, 12+len(id))
	v = binary.BigEndian.AppendUint32(v, uint32(pi))
	v = binary.BigEndian.AppendUint64(v, first)
	return append(v, id...)
}

// decodePush reads a pushorder entry.
func decodePush(k, v []byte) (string, pushPos, error) {
	if len(k) != 8 || len(v) < 13 {
		return "", pushPos{}, errors.New("stored push id is malformed")
	}
	return string(v[12:]), pushPos{order: binary.BigEndian.Uint64(k), pi: binary.BigEndian.Uint32(v), first: binary.BigEndian.Uint64(v[4:])}, nil
}

// windowBounds are the places of the oldest push id in the window and of
// the last one assigned.
func windowBounds(tx *bolt.Tx) (first, last uint64) {
	order := tx.Bucket(bktPushOrder)
	if k, _ := order.Cursor().First(); k != nil {
		first = binary.BigEndian.Uint64(k)
	}
	return first, order.Sequence()
}

// loadPushes reads the window into memory.
//
// An id can be in the file twice: memory forgets ids at once and the file
// at the next flush, so an id published again in between is stored at its
// new place before the old one goes. The newer place is the one kept.
func loadPushes(tx *bolt.Tx) (map[string]pushPos, error) {
	order := tx.Bucket(bktPushOrder)
	n := 0
	if first, _ := order.Cursor().First(); first != nil {
		last, _ := order.Cursor().Last()
		n = int(min(binary.BigEndian.Uint64(last)-binary.BigEndian.Uint64(first)+1, 1<<20))
	}
	m := make(map[string]pushPos, n)
	err := order.ForEach(func(k, v []byte) error {
		id, pos, err := decodePush(k, v)
		if err != nil {
			return err
		}
		m[id] = pos // in order: a later place replaces an earlier one
		return nil
	})
	return m, err
}

func createLayout(tx *bolt.Tx, partitions int) error {
	meta, err := tx.CreateBucket(bktMeta)
	if err != nil {
		return err
	}
	if err := meta.Put(keyFormat, []byte(format)); err != nil {
		return err
	}
	if err := meta.Put(keyParts, u32(uint32(partitions))); err != nil {
		return err
	}
	// A random first log generation: a log left beside a file that was
	// moved aside is never taken for this file's.
	if err := meta.Put(keyWALGen, u64(newEpoch())); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bktPushOrder); err != nil {
		return err
	}
	parts, err := tx.CreateBucket(bktParts)
	if err != nil {
		return err
	}
	for pi := range partitions {
		pb, err := parts.CreateBucket(u32(uint32(pi)))
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bktEvents, bktRefs} {
			if _, err := pb.CreateBucket(name); err != nil {
				return err
			}
		}
		p := &partition{b: pb, head: bus.PartitionHead{Epoch: newEpoch(), First: 1}}
		if err := p.putHead(); err != nil {
			return err
		}
	}
	return nil
}

// partition is one partition's buckets within a transaction.
type partition struct {
	pi     int
	b      *bolt.Bucket
	events *bolt.Bucket
	refs   *bolt.Bucket
	head   bus.PartitionHead // as stored; First is Last+1 when empty
}

func openPartition(tx *bolt.Tx, pi int) (*partition, error) {
	pb := tx.Bucket(bktParts).Bucket(u32(uint32(pi)))
	if pb == nil {
		return nil, fmt.Errorf("partition %d is missing", pi)
	}
	p := &partition{pi: pi, b: pb, events: pb.Bucket(bktEvents), refs: pb.Bucket(bktRefs)}
	if p.events == nil || p.refs == nil {
		return nil, fmt.Errorf("partition %d is missing a bucket", pi)
	}
	h := pb.Get(keyHead)
	if len(h) != 24 && len(h) != 32 {
		return nil, fmt.Errorf("partition %d head is malformed", pi)
	}
	p.head = bus.PartitionHead{
		Epoch: binary.BigEndian.Uint64(h),
		First: binary.BigEndian.Uint64(h[8:]),
		Last:  binary.BigEndian.Uint64(h[16:]),
	}
	if len(h) == 32 {
		p.head.Chain = binary.BigEndian.Uint64(h[24:])
	}
	if p.head.Epoch == 0 || p.head.First == 0 || p.head.First > p.head.Last+1 {
		return nil, fmt.Errorf("partition %d head %+v is inconsistent", pi, p.head)
	}
	return p, nil
}

func (p *partition) putHead() error {
	h := make([]byte, 0, 32)
	h = binary.BigEndian.AppendUint64(h, p.head.Epoch)
	h = binary.BigEndian.AppendUint64(h, p.head.First)
	h = binary.BigEndian.AppendUint64(h, p.head.Last)
	h = binary.BigEndian.AppendUint64(h, p.head.Chain)
	return p.b.Put(keyHead, h)
}

// encodeEvent is the stored form: when it was published, the chain before
// it, then its JSON. Partition and Seq are not in the JSON; they come back
// from the key, and Chain from Prev.
func encodeEvent(e *bus.Event, published time.Time) ([]byte, error) {
	// Encoded into a pooled buffer and copied into v, which bbolt keeps
	// until the commit: one allocation per event where json.Marshal made
	// two (13 MB of the 179 MB BenchmarkStalledReaders allocated).
	jb := bus.GetJSONBuffer()
	defer jb.Release()
	j, err := jb.Encode(e)
	if err != nil {
		return nil, err
	}
	v := make([]byte, 21, 21+len(j))
	binary.BigEndian.PutUint64(v, uint64(published.Unix()))
	binary.BigEndian.PutUint32(v[8:], uint32(published.Nanosecond()))
	v[12] = 0 // marks the chain: a JSON object starts with '{'
	binary.BigEndian.PutUint64(v[13:], e.Prev)
	return append(v, j...), nil
}

// prevChain is the chain before a stored event (0 in the format before
// chains).
func prevChain(v []byte) uint64 {
	if len(v) < 21 || v[12] != 0 {
		return 0
	}
	return binary.BigEndian.Uint64(v[13:])
}

func publishedAt(v []byte) (time.Time, error) {
	if len(v) < 12 {
		return time.Time{}, errors.New("stored event is malformed")
	}
	return time.Unix(int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint32(v[8:]))), nil
}

func decodeEvent(pi int, k, v []byte) (bus.Event, error) {
	var e bus.Event
	if len(k) != 8 || len(v) < 13 {
		return e, errors.New("stored event is malformed")
	}
	data, chained := v[12:], false
	if data[0] == 0 {
		if len(data) < 9 {
			return e, errors.New("stored event is malformed")
		}
		e.Prev, data, chained = binary.BigEndian.Uint64(data[1:]), data[9:], true
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("stored event %d/%d: %w", pi, binary.BigEndian.Uint64(k), err)
	}
	e.Partition, e.Seq = pi, binary.BigEndian.Uint64(k)
	if chained {
		e.Chain = bus.ChainNext(e.Prev, e.PushID)
	}
	return e, nil
}

// trim deletes events beyond the count and age bounds and moves First.
func (p *partition) trim(maxLen int, maxAge time.Duration, now time.Time) error {
	var cutoff time.Time
	if maxAge > 0 {
		cutoff = now.Add(-maxAge)
	}
	// Seek after each Delete: a bbolt cursor's Next after Delete can skip
	// the following key.
	c := p.events.Cursor()
	first := p.head.First
	for k, v := c.Seek(u64(first)); k != nil; k, v = c.Seek(u64(first)) {
		seq := binary.BigEndian.Uint64(k)
		if seq > p.head.Last {
			return fmt.Errorf("event %d is past the head %d", seq, p.head.Last)
		}
		if p.head.Last-seq+1 <= uint64(maxLen) {
			if maxAge == 0 {
				break
			}
			at, err := publishedAt(v)
			if err != nil {
				return err
			}
			if !at.Before(cutoff) {
				break
			}
		}
		if err := c.Delete(); err != nil {
			return err
		}
		first = seq + 1
	}
	if first != p.head.First {
		p.head.First = first
		return p.putHead()
	}
	return nil
}

// trimTo deletes the events before first (a flush trims the file to the
// heads its publishes set, see Bus.trimHeads) and moves First.
func (p *partition) trimTo(first uint64) error {
	if first <= p.head.First {
		return nil
	}
	if first > p.head.Last+1 {
		return fmt.Errorf("partition %d: trim to %d is past the head %d", p.pi, first, p.head.Last)
	}
	c := p.events.Cursor()
	for k, _ := c.Seek(u64(p.head.First)); k != nil && binary.BigEndian.Uint64(k) < first; k, _ = c.Seek(u64(p.head.First)) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	p.head.First = first
	return p.putHead()
}

// walGen is the last log generation the file holds.
func walGen(tx *bolt.Tx) (uint64, error) {
	v := tx.Bucket(bktMeta).Get(keyWALGen)
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), nil
	}
	return 0, errors.New("meta/walgen is malformed")
}

// pushIDSlack is how far past its bound Publish lets the push id window
// grow before trimming it back to the bound. The oldest id sits in a random
// leaf of the pushes bucket, so trimming one id per publish rewrote another
// leaf of pushes, the first of pushorder and their branch pages in every
// commit: 17.5 page writes per publish, 14.5 with the slack
// (BenchmarkPublish). Trimming up to 1,024 at once spreads that over 1,024
// publishes; the one larger commit rewrites at most every leaf of pushes
// (~1,600 at the default 100,000 ids). A window under 16 ids stays exact.
func pushIDSlack(keep int) int { return min(keep/16, 1024) }

// pushPlace is a push id at its place in the window.
type pushPlace struct {
	id    string
	order uint64
}

// trimPushIDs forgets the oldest push ids beyond keep once there are more
// than keep+slack, and returns them.
func trimPushIDs(tx *bolt.Tx, keep, slack int) ([]pushPlace, error) {
	c := tx.Bucket(bktPushOrder).Cursor()
	lastK, _ := c.Last()
	if lastK == nil {
		return nil, nil
	}
	last := binary.BigEndian.Uint64(lastK)
	if firstK, _ := c.First(); last-binary.BigEndian.Uint64(firstK) < uint64(keep+slack) {
		return nil, nil
	}
	var gone []pushPlace
	for k, v := c.First(); k != nil; k, v = c.First() { // First again: Next after Delete can skip
		if last-binary.BigEndian.Uint64(k) < uint64(keep) {
			break
		}
		id, pos, err := decodePush(k, v)
		if err != nil {
			return nil, err
		}
		gone = append(gone, pushPlace{id, pos.order})
		if err := c.Delete(); err != nil {
			return nil, err
		}
	}
	return gone, nil
}

// checkReadable walks every stored event's header and every partition's
// refs, so a damaged file fails Open rather than a later request.
func checkReadable(tx *bolt.Tx) error {
	parts := tx.Bucket(bktParts)
	return parts.ForEachBucket(func(k []byte) error {
		if len(k) != 4 {
			return errors.New("partition key is malformed")
		}
		p, err := openPartition(tx, int(binary.BigEndian.Uint32(k)))
		if err != nil {
			return err
		}
		n := uint64(0)
		if err := p.events.ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) < 12 {
				return errors.New("stored event is malformed")
			}
			n++
			return nil
		}); err != nil {
			return err
		}
		if n != p.head.Last+1-p.head.First {
			return fmt.Errorf("partition %d holds %d events, its head says %d", binary.BigEndian.Uint32(k), n, p.head.Last+1-p.head.First)
		}
		return p.refs.ForEachBucket(func(repo []byte) error {
			return p.refs.Bucket(repo).ForEach(func(_, _ []byte) error { return nil })
		})
	})
}
