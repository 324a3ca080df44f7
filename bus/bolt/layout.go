package bolt

// The file's layout. Integers are big-endian so keys sort numerically.
//
//	meta/format             "refcast-bus/1"
//	meta/partitions         u32
//	parts/<u32 partition>/  one bucket per partition:
//	    head                u64 epoch, u64 first, u64 last, u64 chain at last
//	                        (files written before chains: 24 bytes, chain unknown)
//	    events/<u64 seq>    i64 unix seconds, u32 nanoseconds (published at),
//	                        0x00, u64 chain of the history before it (bus.ChainNext),
//	                        event JSON (files written before chains: no 0x00
//	                        and chain, the JSON's "{" follows the time)
//	    refs/<repo>/<ref>   object id; a repo bucket exists while it has refs
//	    refs/<repo>/\x00...  git fields (bus.GitFields: HEAD, peels), sorted before every ref
//	pushes/<push id>        u32 partition, u64 first seq, u64 order
//	pushorder/<u64 order>   push id, oldest first (the idempotency window)

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

const format = "refcast-bus/1"

var (
	bktMeta      = []byte("meta")
	bktParts     = []byte("parts")
	bktPushes    = []byte("pushes")
	bktPushOrder = []byte("pushorder")
	bktEvents    = []byte("events")
	bktRefs      = []byte("refs")
	keyFormat    = []byte("format")
	keyParts     = []byte("partitions")
	keyHead      = []byte("head")
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
	if f := meta.Get(keyFormat); !bytes.Equal(f, []byte(format)) {
		return formatError(fmt.Sprintf("format %q, this refcast reads %q", f, format))
	}
	n := meta.Get(keyParts)
	if len(n) != 4 {
		return errors.New("meta/partitions is malformed")
	}
	if got := int(binary.BigEndian.Uint32(n)); got != partitions {
		return formatError(fmt.Sprintf("the data directory was created with %d partitions, not %d; every node and hook of a deployment must use the same --partitions", got, partitions))
	}
	for _, name := range [][]byte{bktParts, bktPushes, bktPushOrder} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("bucket %s is missing", name)
		}
	}
	return nil
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
	for _, name := range [][]byte{bktPushes, bktPushOrder} {
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
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
	p := &partition{b: pb, events: pb.Bucket(bktEvents), refs: pb.Bucket(bktRefs)}
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
	j, err := json.Marshal(e)
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

// pushIDSlack is how far past its bound Publish lets the push id window
// grow before trimming it back to the bound. The oldest id sits in a random
// leaf of the pushes bucket, so trimming one id per publish rewrote another
// leaf of pushes, the first of pushorder and their branch pages in every
// commit: 17.5 page writes per publish, 14.5 with the slack
// (BenchmarkPublish). Trimming up to 1,024 at once spreads that over 1,024
// publishes; the one larger commit rewrites at most every leaf of pushes
// (~1,600 at the default 100,000 ids). A window under 16 ids stays exact.
func pushIDSlack(keep int) int { return min(keep/16, 1024) }

// trimPushIDs forgets the oldest push ids beyond keep once there are more
// than keep+slack.
func trimPushIDs(tx *bolt.Tx, keep, slack int) error {
	order, pushes := tx.Bucket(bktPushOrder), tx.Bucket(bktPushes)
	c := order.Cursor()
	lastK, _ := c.Last()
	if lastK == nil {
		return nil
	}
	last := binary.BigEndian.Uint64(lastK)
	if firstK, _ := c.First(); last-binary.BigEndian.Uint64(firstK) < uint64(keep+slack) {
		return nil
	}
	for k, v := c.First(); k != nil; k, v = c.First() { // First again: Next after Delete can skip
		if last-binary.BigEndian.Uint64(k) < uint64(keep) {
			break
		}
		if err := pushes.Delete(v); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
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
