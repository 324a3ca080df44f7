package bus

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// A chain identifies a partition's history up to a Seq: a hash chained over
// the push ids of every event of the epoch so far. Two histories of one
// epoch with the same chain at a Seq agree on every event up to it, even
// when a store came back from an older copy (an RDB snapshot, a lagging
// replica, a restored file) and new pushes reused the Seqs it lost: the
// Seq alone cannot tell, and neither can the push id at that Seq (a push
// retried after a lost acknowledgement can land at its old Seq again).
// A cursor carries part of the chain at each of its Seqs, and a node
// resumes a cursor only if the bus's chain there is the same
// (docs/architecture.md, "Rewinds").
//
// The chain before the first event of an epoch is 0; 0 also stands for
// "unknown" (history written by a version without chains), which a cursor
// holding 0 matches, as before chains existed.

// ChainNext is the chain after an event of the given push id that follows
// the history whose chain is prev: the first 8 bytes of
// SHA-1(ChainHex(prev) + "\n" + pushID). The Redis scripts compute the same
// with redis.sha1hex, so it must not change without a new layout.
func ChainNext(prev uint64, pushID string) uint64 {
	h := sha1.Sum([]byte(ChainHex(prev) + "\n" + pushID))
	return binary.BigEndian.Uint64(h[:8])
}

// ChainHex is the stored form of a chain: 16 lower-case hex digits, or ""
// for 0.
func ChainHex(c uint64) string {
	if c == 0 {
		return ""
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], c)
	return hex.EncodeToString(b[:])
}

// ParseChainHex parses ChainHex's form; anything else is 0 (unknown).
func ParseChainHex(s string) uint64 {
	if len(s) != 16 {
		return 0
	}
	c, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0
	}
	return c
}
