package server

import "github.com/refcast/refcast/wire"

// The cursor, its encoding and Fits live in package wire; what is here is
// the node's own use of it.

// cursorCurrent reports whether c is exactly at pos (same epoch) on every
// relevant partition: nothing lies between them to replay.
func cursorCurrent(c, pos wire.Cursor, relevant []bool) bool {
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
