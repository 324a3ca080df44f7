package server

import (
	"slices"
	"testing"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/server/fanout"
)

// TestEngineCursorAgrees: the engine stamps frames with its own copy of the
// cursor's encoder (fanout/cursor.go); it must write exactly what
// DecodeCursor reads and what Cursor.Encode writes, and fold epochs the
// same way.
func TestEngineCursorAgrees(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		heads bus.Heads
		seqs  []uint64
	}{
		{"one partition", bus.Heads{{Epoch: 7}}, []uint64{0}},
		{"default partitions", make(bus.Heads, bus.DefaultPartitions), make([]uint64, bus.DefaultPartitions)},
		{"large seqs", bus.Heads{{Epoch: 1 << 62}, {Epoch: 3}}, []uint64{1<<64 - 1, 1 << 35}},
		{"1024 partitions", make(bus.Heads, 1024), make([]uint64, 1024)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.seqs {
				if tc.seqs[i] == 0 {
					tc.seqs[i] = uint64(i * 7919)
				}
			}
			fp := EpochFingerprint(tc.heads)
			if got := fanout.EpochFingerprint(tc.heads); got != fp {
				t.Fatalf("engine's epoch fingerprint %x, server's %x", got, fp)
			}
			c := Cursor{Epoch: fp, Seqs: tc.seqs}
			enc := string(fanout.Cursor(c).AppendEncode(nil))
			if enc != c.Encode() {
				t.Fatalf("engine encodes %q, server %q", enc, c.Encode())
			}
			back, err := DecodeCursor(enc)
			if err != nil || back.Epoch != c.Epoch || !slices.Equal(back.Seqs, c.Seqs) {
				t.Fatalf("DecodeCursor(engine's %q) = %+v, %v", enc, back, err)
			}
		})
	}
}
