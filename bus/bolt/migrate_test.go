package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/refcast/refcast/bus/bustest"
)

// toV1 rewrites a closed bus file into format 1: pushorder/<order> → id and
// pushes/<id> → u32 partition, u64 first, u64 order, as refcast wrote it
// before the window moved into memory. corrupt damages one position.
func toV1(t *testing.T, dir string, corrupt bool) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		order := tx.Bucket(bktPushOrder)
		pushes, err := tx.CreateBucket(bktPushes)
		if err != nil {
			return err
		}
		type kv struct{ k, v []byte }
		var ids []kv
		if err := order.ForEach(func(k, v []byte) error {
			id, pos, err := decodePush(k, v)
			if err != nil {
				return err
			}
			p := binary.BigEndian.AppendUint32(nil, pos.pi)
			p = binary.BigEndian.AppendUint64(p, pos.first)
			p = binary.BigEndian.AppendUint64(p, pos.order)
			if corrupt {
				p, corrupt = p[:19], false
			}
			if err := pushes.Put([]byte(id), p); err != nil {
				return err
			}
			ids = append(ids, kv{append([]byte(nil), k...), []byte(id)})
			return nil
		}); err != nil {
			return err
		}
		for _, e := range ids {
			if err := order.Put(e.k, e.v); err != nil {
				return err
			}
		}
		return tx.Bucket(bktMeta).Put(keyFormat, []byte(formatV1))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenConvertsFormat1: a data directory written by a refcast that kept
// the push id index in the file opens, keeps every remembered push id at
// its position (a retried push is still a duplicate), and is format 2
// afterwards.
func TestOpenConvertsFormat1(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 4, PushIDs: 5})
	first := map[string]uint64{}
	for i := range 8 { // 8 ids, a window of 5: the oldest 3 are forgotten
		id := fmt.Sprintf("p%d", i)
		first[id] = publish(t, b, bustest.Push(id, fmt.Sprintf("acme/r%d", i%3), "refs/heads/main", bustest.ID(i+1)))[0].Seq
	}
	h := heads(t, b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	toV1(t, dir, false)

	b = open(t, dir, Options{Partitions: 4, PushIDs: 5})
	for i := 3; i < 8; i++ {
		id := fmt.Sprintf("p%d", i)
		evs := publish(t, b, bustest.Push(id, fmt.Sprintf("acme/r%d", i%3), "refs/heads/main", bustest.ID(i+1)))
		if evs[0].Seq != first[id] {
			t.Errorf("retried %s got seq %d, want its original %d", id, evs[0].Seq, first[id])
		}
	}
	if got := heads(t, b); !slices.Equal(got, h) {
		t.Errorf("heads after retries %v, want unchanged %v", got, h)
	}
	evs := publish(t, b, bustest.Push("p0", "acme/r0", "refs/heads/main", bustest.ID(1)))
	if evs[0].Seq != h[evs[0].Partition].Last+1 {
		t.Errorf("forgotten p0 got seq %d, want a new one %d", evs[0].Seq, h[evs[0].Partition].Last+1)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bbolt.Tx) error {
		if f := string(tx.Bucket(bktMeta).Get(keyFormat)); f != format {
			t.Errorf("format after Open %q, want %q", f, format)
		}
		if tx.Bucket(bktPushes) != nil {
			t.Error("bucket pushes is still there")
		}
		return nil
	})
}

// TestOpenFormat1Damaged: a format-1 file whose push index is damaged fails
// Open with ErrCorrupt and is left as it was.
func TestOpenFormat1Damaged(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 2})
	publish(t, b, bustest.Push("a", "acme/app", "refs/heads/main", bustest.ID(1)))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	toV1(t, dir, true)
	for range 2 {
		if _, err := Open(dir, Options{Partitions: 2}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want ErrCorrupt", err)
		}
	}
}
