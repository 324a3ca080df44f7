package server

import "github.com/refcast/refcast/wire"

// The cursor, its encoding and Fits live in package wire; what is here is
// the node's own use of it.

// cursorCurrent reports whether c is exactly at pos (same epoch, same Seq
// and check) on every relevant partition: nothing lies between them to
// replay, and the node vouches for the history up to there.
func cursorCurrent(c, pos wire.Cursor, relevant []bool) bool {
	if c.Epoch != pos.Epoch || len(c.Seqs) != len(pos.Seqs) || len(relevant) != len(c.Seqs) {
		return false
	}
	for p, want := range relevant {
		if want && (c.Seqs[p] != pos.Seqs[p] || c.Check(p) != pos.Check(p)) {
			return false
		}
	}
	return true
}

// sameChecks reports whether a and b carry the same check on every
// partition.
func sameChecks(a, b wire.Cursor) bool {
	for p := range a.Seqs {
		if a.Check(p) != b.Check(p) {
			return false
		}
	}
	return true
}
