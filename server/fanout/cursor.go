package fanout

import (
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"

	"github.com/refcast/refcast/bus"
)

// The part of the cursor the engine needs: the position it keeps and
// stamps on every frame, and its wire form. It is the same type and the
// same encoding as server.Cursor (a test there checks they agree); the
// decoder, Fits and the rest of the codec stay with the server. Kept apart
// in this file so it can be replaced by the protocol package's cursor.

// A Cursor is a position in the whole event stream of a deployment: for
// every partition, the Seq of the last event considered, plus a
// fingerprint of the partitions' epochs. See server.Cursor.
type Cursor struct {
	Epoch uint32   // fingerprint of the epochs the Seqs belong to
	Seqs  []uint64 // per partition
}

// cursorPrefix versions the encoding.
const cursorPrefix = "c1"

// EpochFingerprint folds the partitions' epochs into the cursor's epoch
// field. Any partition losing its history changes it.
func EpochFingerprint(h bus.Heads) uint32 {
	f := fnv.New32a()
	var b [8]byte
	for _, p := range h {
		binary.BigEndian.PutUint64(b[:], p.Epoch)
		f.Write(b[:])
	}
	return f.Sum32()
}

// AppendEncode appends the wire form to dst.
func (c Cursor) AppendEncode(dst []byte) []byte {
	var raw [binary.MaxVarintLen64]byte
	body := make([]byte, 0, 4+binary.MaxVarintLen64*(len(c.Seqs)+1))
	body = binary.AppendUvarint(body, uint64(len(c.Seqs)))
	body = binary.BigEndian.AppendUint32(body, c.Epoch)
	for _, s := range c.Seqs {
		n := binary.PutUvarint(raw[:], s)
		body = append(body, raw[:n]...)
	}
	dst = append(dst, cursorPrefix...)
	return base64.RawURLEncoding.AppendEncode(dst, body)
}

// clone returns a copy that does not share Seqs.
func (c Cursor) clone() Cursor {
	return Cursor{Epoch: c.Epoch, Seqs: append([]uint64(nil), c.Seqs...)}
}

// merge raises c to at least o, partition by partition.
func (c Cursor) merge(o []uint64) {
	for i := range c.Seqs {
		if i < len(o) && o[i] > c.Seqs[i] {
			c.Seqs[i] = o[i]
		}
	}
}

// atLeast reports whether every Seq of a is >= the matching one of b.
func atLeast(a, b []uint64) bool {
	for i := range b {
		if a[i] < b[i] {
			return false
		}
	}
	return true
}
