package gitfront

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestPktLine(t *testing.T) {
	t.Parallel()
	type pkt struct {
		kind Kind
		data string
	}
	tests := []struct {
		name string
		in   string
		want []pkt
		err  bool // the stream ends in ErrPktLine after want
	}{
		{name: "empty stream", in: ""},
		{name: "data and flush", in: "0009hello0000", want: []pkt{{Data, "hello"}, {Flush, ""}}},
		{name: "specials", in: "000000010002", want: []pkt{{Flush, ""}, {Delim, ""}, {ResponseEnd, ""}}},
		{name: "empty data", in: "0004", want: []pkt{{Data, ""}}},
		{name: "upper-case hex", in: "000Aabcdef", want: []pkt{{Data, "abcdef"}}},
		{name: "0003", in: "0003", err: true},
		{name: "not hex", in: "00g1", err: true},
		{name: "short prefix", in: "00", err: true},
		{name: "short payload", in: "0010abc", err: true},
		{name: "oversized", in: "fff1" + strings.Repeat("x", 0xfff1-4), err: true},
		{name: "max size", in: string(AppendPkt(nil, strings.Repeat("y", MaxPktPayload))), want: []pkt{{Data, strings.Repeat("y", MaxPktPayload)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewPktReader(strings.NewReader(tc.in))
			for i, w := range tc.want {
				k, d, err := r.Next()
				if err != nil || k != w.kind || string(d) != w.data {
					t.Fatalf("packet %d: %v %q %v; want %v %q", i, k, Clip(d), err, w.kind, Clip([]byte(w.data)))
				}
			}
			_, _, err := r.Next()
			if tc.err != errors.Is(err, ErrPktLine) || (!tc.err && err != io.EOF) {
				t.Fatalf("end: err = %v, want pkt-line error %v", err, tc.err)
			}
		})
	}
}

func TestAppendPktLimit(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("no panic for a payload over the limit")
		}
	}()
	AppendPkt(nil, strings.Repeat("z", MaxPktPayload+1))
}

// Clip shortens test output.
func Clip(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// FuzzPktLine checks the reader never panics nor returns an oversized
// payload, and that what it reads re-encodes to packets that read back the
// same.
func FuzzPktLine(f *testing.F) {
	for _, s := range []string{"", "0009hello0000", "000000010002", "0004", "0003", "00g1", "0010abc", "fff1", "0014command=ls-refs\n0001000apeel\n0000"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		read := func(in []byte) (out []byte, pkts []string) {
			r := NewPktReader(bytes.NewReader(in))
			for {
				k, d, err := r.Next()
				if err != nil {
					if err != io.EOF && !errors.Is(err, ErrPktLine) {
						t.Fatalf("unexpected error %v", err)
					}
					return out, pkts
				}
				if len(d) > MaxPktPayload {
					t.Fatalf("payload of %d bytes", len(d))
				}
				switch k {
				case Data:
					out = AppendPkt(out, string(d))
				case Flush:
					out = append(out, flushPkt...)
				case Delim:
					out = append(out, delimPkt...)
				case ResponseEnd:
					out = append(out, "0002"...)
				}
				pkts = append(pkts, fmt.Sprint(k, string(d)))
			}
		}
		out, first := read(in)
		again, second := read(out)
		if !bytes.Equal(out, again) || !slices.Equal(first, second) {
			t.Fatalf("re-encoding changed the packets: %q vs %q", Clip(out), Clip(again))
		}
	})
}
