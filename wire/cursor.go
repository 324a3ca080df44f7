package wire

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
// filtered out) and a check of the history up to it, plus a fingerprint of
// the partitions' epochs. It does not depend on the subscription's filter,
// so one encoded cursor serves every subscriber of a node, and a client can
// resume on any node.
//
// Wire form: "c2" + base64url(no padding) of
//
//	uvarint(partitions) || uint32be(epoch fingerprint) ||
//	( uvarint(seq) || uint32be(check), the check only when seq > 0 ) × partitions
//
// The check is the low 32 bits of the bus's chain at the Seq
// (bus.ChainNext): a node resumes a cursor only where the history still
// holds the events the client saw, which the Seq and the epoch alone cannot
// prove after a store came back from an older copy. The older form "c1"
// (no checks) still decodes, with every check 0 ("unknown"): it resumes
// only where the history's chain is unknown too, and otherwise gets a
// reset.
//
// Clients must treat it as opaque; docs/protocol.md states what they may
// rely on (URL-safe characters, at most MaxCursorLen of them).
type Cursor struct {
	Epoch uint32   // fingerprint of the epochs the Seqs belong to
	Seqs  []uint64 // per partition
	// Checks are per partition the low 32 bits of the chain at Seqs[p] (0:
	// unknown, or Seqs[p] is 0). Nil means all 0; otherwise as long as
	// Seqs.
	Checks []uint32
}

// CursorPrefix versions the encoding; cursorPrefixV1 is the older form
// without checks, still accepted.
const (
	CursorPrefix   = "c2"
	cursorPrefixV1 = "c1"
)

// maxCountLen is the length of uvarint(bus.MaxPartitions): 7 bits per
// byte, so 2 bytes for any count up to 16,383 (a test checks it).
const maxCountLen = 2

// maxCursorBody is the longest decoded cursor: the partition count, the
// 4-byte epoch fingerprint and bus.MaxPartitions Seqs of at most
// binary.MaxVarintLen64 (10) bytes each with their 4-byte checks:
// 2 + 4 + 1,024 × 14 = 14,342.
const maxCursorBody = maxCountLen + 4 + bus.MaxPartitions*(binary.MaxVarintLen64+4)

// MaxCursorLen is the longest cursor the protocol allows, in bytes: the
// prefix and maxCursorBody in unpadded base64 (4 characters per 3 bytes,
// rounded up): 2 + ⌈14,342 × 4 / 3⌉ = 19,125. A node never sends a longer
// one, so a client storing cursors needs no smaller bound, and a node
// refuses a longer one without decoding it. The cursor of a deployment
// with p partitions whose Seqs are below 2^(7k) is at most about
// 2 + (6 + p×(k+4))×4/3 long: 160 characters at 16 partitions with every
// Seq below 2^21, 6,837 at 1,024 partitions with every Seq below 128.
const MaxCursorLen = len(CursorPrefix) + (maxCursorBody*4+2)/3

// ErrBadCursor means the string is not a cursor at all (a node answers
// 400); a well-formed cursor that cannot be honoured is not an error but a
// reset.
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

// CheckOf is the part of a chain a cursor carries.
func CheckOf(chain uint64) uint32 { return uint32(chain) }

// At returns a cursor at the heads: their Seqs, checks and epoch
// fingerprint.
func At(h bus.Heads) Cursor {
	c := Cursor{Epoch: EpochFingerprint(h), Seqs: make([]uint64, len(h)), Checks: make([]uint32, len(h))}
	for p, hd := range h {
		c.Set(p, hd.Last, hd.Chain)
	}
	return c
}

// Check returns the check of partition p (0 when Checks is nil).
func (c Cursor) Check(p int) uint32 {
	if p < len(c.Checks) {
		return c.Checks[p]
	}
	return 0
}

// Set moves partition p to seq, whose chain is chain (in place; Checks is
// made when nil).
func (c *Cursor) Set(p int, seq, chain uint64) {
	c.ensureChecks()
	c.Seqs[p] = seq
	c.Checks[p] = CheckOf(chain)
}

func (c *Cursor) ensureChecks() {
	if c.Checks == nil {
		c.Checks = make([]uint32, len(c.Seqs))
	}
}

// Encode returns the wire form.
func (c Cursor) Encode() string {
	buf := make([]byte, 0, 4+binary.MaxVarintLen64*(len(c.Seqs)+1))
	return string(c.AppendEncode(buf))
}

// AppendEncode appends the wire form to dst. It allocates nothing beyond
// growing dst: the body is encoded 3 bytes at a time (base64 of a
// concatenation of 3-byte groups is the concatenation of their base64) from
// a small buffer on the stack, because a node encodes a cursor into every
// frame it sends.
func (c Cursor) AppendEncode(dst []byte) []byte {
	dst = append(dst, CursorPrefix...)
	// Flushed at 48 bytes or more, it then holds at most 2, and a Seq adds
	// at most binary.MaxVarintLen64 (10) and its check 4: 64 bytes always
	// suffice.
	var buf [64]byte
	n := binary.PutUvarint(buf[:], uint64(len(c.Seqs)))
	binary.BigEndian.PutUint32(buf[n:], c.Epoch)
	n += 4
	for i, s := range c.Seqs {
		if n >= 48 {
			k := n - n%3
			dst = base64.RawURLEncoding.AppendEncode(dst, buf[:k])
			n = copy(buf[:], buf[k:n])
		}
		n += binary.PutUvarint(buf[n:], s)
		if s > 0 {
			binary.BigEndian.PutUint32(buf[n:], c.Check(i))
			n += 4
		}
	}
	return base64.RawURLEncoding.AppendEncode(dst, buf[:n])
}

// DecodeCursor parses the wire form. It fails, with an error wrapping
// ErrBadCursor, only for strings that cannot be a cursor; whether the
// cursor fits a deployment is the caller's question (see Cursor.Fits).
func DecodeCursor(s string) (Cursor, error) {
	if len(s) > MaxCursorLen {
		return Cursor{}, fmt.Errorf("%w: longer than %d bytes", ErrBadCursor, MaxCursorLen)
	}
	if len(s) < len(CursorPrefix) || s[:len(CursorPrefix)] != CursorPrefix && s[:len(cursorPrefixV1)] != cursorPrefixV1 {
		return Cursor{}, fmt.Errorf("%w: unknown version (expected a string starting with %q)", ErrBadCursor, CursorPrefix)
	}
	checks := s[:len(CursorPrefix)] == CursorPrefix
	body, err := base64.RawURLEncoding.DecodeString(s[len(CursorPrefix):])
	if err != nil || strings.ContainsAny(s, "\r\n") { // the decoder skips CR and LF
		return Cursor{}, fmt.Errorf("%w: not base64url", ErrBadCursor)
	}
	n, k := binary.Uvarint(body)
	if k <= 0 || n == 0 || n > bus.MaxPartitions {
		return Cursor{}, fmt.Errorf("%w: bad partition count", ErrBadCursor)
	}
	body = body[k:]
	if len(body) < 4 {
		return Cursor{}, fmt.Errorf("%w: truncated", ErrBadCursor)
	}
	c := Cursor{Epoch: binary.BigEndian.Uint32(body), Seqs: make([]uint64, n), Checks: make([]uint32, n)}
	body = body[4:]
	for i := range c.Seqs {
		v, k := binary.Uvarint(body)
		if k <= 0 {
			return Cursor{}, fmt.Errorf("%w: truncated", ErrBadCursor)
		}
		c.Seqs[i] = v
		body = body[k:]
		if checks && v > 0 {
			if len(body) < 4 {
				return Cursor{}, fmt.Errorf("%w: truncated", ErrBadCursor)
			}
			c.Checks[i] = binary.BigEndian.Uint32(body)
			body = body[4:]
		}
	}
	if len(body) != 0 {
		return Cursor{}, fmt.Errorf("%w: trailing bytes", ErrBadCursor)
	}
	return c, nil
}

// ValidateCursor checks that s looks like a cursor without decoding it: 1
// to MaxCursorLen URL-safe characters ([A-Za-z0-9_-]). It is the check for
// a client, which treats cursors as opaque (a newer node may send a newer
// version): the string can travel in a URL, a header or a file unescaped.
func ValidateCursor(s string) error {
	if s == "" || len(s) > MaxCursorLen {
		return fmt.Errorf("cursor must be 1 to %d characters", MaxCursorLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("cursor %.40q: character %q is not allowed", s, c)
		}
	}
	return nil
}

// Fits reports whether the cursor can be resumed against heads: same
// partition count, same epochs, and, for the partitions the subscription
// reads (relevant; nil means all), no Seq ahead of what was published or
// behind what is retained, and the head's chain at a Seq at the head. When
// it does not, the reason is returned for the reset event. A Seq below the
// head still needs its check compared with the history's chain there (see
// CheckFits): heads do not hold it.
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
		if s == h[p].Last && !c.CheckFits(p, h[p].Chain) {
			return false, ReasonRewound
		}
	}
	return true, ""
}

// ReasonRewound is the reset reason of a cursor whose Seq the history holds
// with other events than the client saw: the store came back from an older
// copy, and new pushes took the Seqs it lost.
const ReasonRewound = "the history was rewound: the events the cursor points at were lost and their positions reused"

// CheckFits reports whether partition p's check matches chain, the bus's
// chain at Seqs[p]. A Seq of 0 always fits (nothing was seen).
func (c Cursor) CheckFits(p int, chain uint64) bool {
	return c.Seqs[p] == 0 || c.Check(p) == CheckOf(chain)
}

// Clone returns a copy that does not share Seqs or Checks; its Checks are
// never nil.
func (c Cursor) Clone() Cursor {
	out := Cursor{Epoch: c.Epoch, Seqs: append([]uint64(nil), c.Seqs...), Checks: make([]uint32, len(c.Seqs))}
	copy(out.Checks, c.Checks)
	return out
}

// Merge raises c to at least o, partition by partition, taking o's check
// where it takes o's Seq (in place: c's Seqs and Checks change).
func (c *Cursor) Merge(o Cursor) {
	c.ensureChecks()
	for i := range c.Seqs {
		if i < len(o.Seqs) && o.Seqs[i] > c.Seqs[i] {
			c.Seqs[i], c.Checks[i] = o.Seqs[i], o.Check(i)
		}
	}
}

// AtLeast reports whether every Seq of a is at least the matching one of
// b (a is at or past b on every partition b names).
func AtLeast(a, b []uint64) bool {
	for i := range b {
		if a[i] < b[i] {
			return false
		}
	}
	return true
}
