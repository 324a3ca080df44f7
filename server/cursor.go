package server

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/refcast/refcast/bus"
)

// A Cursor is a position in the whole event stream of a deployment: for
// every partition, the Seq of the last event considered (delivered or
// filtered out), plus a fingerprint of the partitions' epochs. It does not
// depend on the subscription's filter, so one encoded cursor serves every
// subscriber of a node, and a client can resume on any node.
//
// Wire form: "c1" + base64url(no padding) of
//
//	uvarint(partitions) || uint32be(epoch fingerprint) || uvarint(seq) × partitions
//
// Clients must treat it as opaque; docs/protocol.md states what they may
// rely on.
type Cursor struct {
	Epoch uint32   // fingerprint of the epochs the Seqs belong to
	Seqs  []uint64 // per partition
}

// cursorPrefix versions the encoding.
const cursorPrefix = "c1"

// maxCursorLen bounds what we try to decode: 1024 partitions of 10-byte
// varints, base64-expanded.
const maxCursorLen = 16 * 1024

// ErrBadCursor means the string is not a cursor at all (answered 400); a
// well-formed cursor that cannot be honoured is not an error but a reset.
var ErrBadCursor = errors.New("malformed cursor")

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

// Encode returns the wire form.
func (c Cursor) Encode() string {
	buf := make([]byte, 0, 4+binary.MaxVarintLen64*(len(c.Seqs)+1))
	return string(c.AppendEncode(buf))
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

// DecodeCursor parses the wire form. It fails only for strings that cannot
// be a cursor; whether the cursor fits this deployment is the caller's
// question (see Cursor.Fits).
func DecodeCursor(s string) (Cursor, error) {
	if len(s) > maxCursorLen {
		return Cursor{}, fmt.Errorf("%w: longer than %d bytes", ErrBadCursor, maxCursorLen)
	}
	if len(s) < len(cursorPrefix) || s[:len(cursorPrefix)] != cursorPrefix {
		return Cursor{}, fmt.Errorf("%w: unknown version (expected a string starting with %q)", ErrBadCursor, cursorPrefix)
	}
	body, err := base64.RawURLEncoding.DecodeString(s[len(cursorPrefix):])
	if err != nil || strings.ContainsAny(s, "\r\n") { // the decoder skips CR and LF
		return Cursor{}, fmt.Errorf("%w: not base64url", ErrBadCursor)
	}
	n, k := binary.Uvarint(body)
	if k <= 0 || n == 0 || n > 1024 {
		return Cursor{}, fmt.Errorf("%w: bad partition count", ErrBadCursor)
	}
	body = body[k:]
	if len(body) < 4 {
		return Cursor{}, fmt.Errorf("%w: truncated", ErrBadCursor)
	}
	c := Cursor{Epoch: binary.BigEndian.Uint32(body), Seqs: make([]uint64, n)}
	body = body[4:]
	for i := range c.Seqs {
		v, k := binary.Uvarint(body)
		if k <= 0 {
			return Cursor{}, fmt.Errorf("%w: truncated", ErrBadCursor)
		}
		c.Seqs[i] = v
		body = body[k:]
	}
	if len(body) != 0 {
		return Cursor{}, fmt.Errorf("%w: trailing bytes", ErrBadCursor)
	}
	return c, nil
}

// Fits reports whether the cursor can be resumed against heads: same
// partition count, same epochs, and, for the partitions the subscription
// reads (relevant; nil means all), no Seq ahead of what was published or
// behind what is retained. When it does not, the reason is returned for the
// reset event.
func (c Cursor) Fits(h bus.Heads, relevant []bool) (bool, string) {
	switch {
	case len(c.Seqs) != len(h):
		return false, fmt.Sprintf("cursor is for %d partitions, this deployment has %d", len(c.Seqs), len(h))
	case c.Epoch != EpochFingerprint(h):
		return false, "the history the cursor points into was lost (new epoch)"
	}
	for p, s := range c.Seqs {
		if relevant != nil && !relevant[p] {
			continue
		}
		if s > h[p].Last {
			return false, "cursor is ahead of the history"
		}
		if s+1 < h[p].First {
			return false, "cursor is older than the retained history"
		}
	}
	return true, ""
}

// clone returns a copy that does not share Seqs.
// current reports whether c is exactly at pos (same epoch) on every
// relevant partition: nothing lies between them to replay.
func (c Cursor) current(pos Cursor, relevant []bool) bool {
	if c.Epoch != pos.Epoch || len(c.Seqs) != len(pos.Seqs) || len(relevant) != len(c.Seqs) {
		return false
	}
	for p, want := range relevant {
		if want && c.Seqs[p] != pos.Seqs[p] {
			return false
		}
	}
	return true
}

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
