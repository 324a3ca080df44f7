package wire

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/refcast/refcast/bus"
)

var cursorCases = []struct {
	name string
	c    Cursor
}{
	{"one partition zero", Cursor{Epoch: 0, Seqs: []uint64{0}}},
	{"one partition", Cursor{Epoch: 7, Seqs: []uint64{42}}},
	{"default partitions", Cursor{Epoch: 0xdeadbeef, Seqs: []uint64{0, 1, 127, 128, 255, 256, 16383, 16384, 1 << 20, 1 << 32, 1 << 40, 1 << 56, 3, 2, 1, 0}}},
	{"max values", Cursor{Epoch: math.MaxUint32, Seqs: []uint64{math.MaxUint64, math.MaxUint64 - 1}, Checks: []uint32{math.MaxUint32, 0}}},
	{"1024 partitions", Cursor{Epoch: 1, Seqs: make([]uint64, 1024)}},
	{"checks", Cursor{Epoch: 3, Seqs: []uint64{0, 1, 300, 5}, Checks: []uint32{0, 0xdeadbeef, 1, 0}}},
}

// sameCursor compares two cursors, nil Checks counting as all 0.
func sameCursor(a, b Cursor) bool {
	if a.Epoch != b.Epoch || !slices.Equal(a.Seqs, b.Seqs) {
		return false
	}
	for p := range a.Seqs {
		if a.Check(p) != b.Check(p) {
			return false
		}
	}
	return true
}

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range cursorCases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.c.Encode()
			if !urlSafeCursor(s) {
				t.Fatalf("encoded %q is not [A-Za-z0-9_-] with prefix c2", s)
			}
			if want := referenceEncode(tc.c); s != want {
				t.Fatalf("Encode = %q, want %q", s, want)
			}
			if got := string(tc.c.AppendEncode([]byte("x"))); got != "x"+s {
				t.Fatalf("AppendEncode = %q, want %q", got, "x"+s)
			}
			got, err := DecodeCursor(s)
			if err != nil {
				t.Fatalf("decode %q: %v", s, err)
			}
			if !sameCursor(got, tc.c) {
				t.Fatalf("round trip: got %+v, want %+v", got, tc.c)
			}
		})
	}
}

// referenceEncode is the wire form built the plain way, the whole body
// then base64: AppendEncode, which encodes in pieces to avoid allocating,
// must write exactly these bytes.
func referenceEncode(c Cursor) string {
	body := binary.AppendUvarint(nil, uint64(len(c.Seqs)))
	body = binary.BigEndian.AppendUint32(body, c.Epoch)
	for p, s := range c.Seqs {
		body = binary.AppendUvarint(body, s)
		if s > 0 {
			body = binary.BigEndian.AppendUint32(body, c.Check(p))
		}
	}
	return CursorPrefix + base64.RawURLEncoding.EncodeToString(body)
}

func urlSafeCursor(s string) bool {
	if len(s) < 2 || s[:2] != CursorPrefix {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func rawCursor(body []byte) string { return CursorPrefix + base64.RawURLEncoding.EncodeToString(body) }

func TestDecodeCursorGarbled(t *testing.T) {
	t.Parallel()
	valid := Cursor{Epoch: 9, Seqs: []uint64{1, 2, 3}}.Encode()
	tooLong := make([]byte, MaxCursorLen+1)
	for i := range tooLong {
		tooLong[i] = 'A'
	}
	copy(tooLong, CursorPrefix)
	cases := []struct{ name, in string }{
		{"empty", ""},
		{"prefix only", "c2"},
		{"prefix only v1", "c1"},
		{"wrong version", "c3" + valid[2:]},
		{"no prefix", valid[2:]},
		{"not base64url", "c1!!!!"},
		{"std base64 chars", "c1ab+/"},
		{"padding", valid + "=="},
		{"zero partitions", rawCursor([]byte{0, 0, 0, 0, 0})},
		{"too many partitions", rawCursor(binary.AppendUvarint(nil, 1025))},
		{"partition count overflow", rawCursor([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})},
		{"missing epoch", rawCursor([]byte{1, 0, 0})},
		{"missing seq", rawCursor([]byte{2, 0, 0, 0, 0, 5, 0, 0, 0, 0})},
		{"missing check", rawCursor([]byte{1, 0, 0, 0, 0, 5, 0, 0})},
		{"unterminated varint", rawCursor([]byte{1, 0, 0, 0, 0, 0x80})},
		{"trailing bytes", rawCursor([]byte{1, 0, 0, 0, 0, 5, 0, 0, 0, 0, 6})},
		{"trailing bytes v1", "c1" + base64.RawURLEncoding.EncodeToString([]byte{1, 0, 0, 0, 0, 5, 6})},
		{"truncated valid", valid[:len(valid)-3]},
		{"too long", string(tooLong)},
		{"newline injection", valid + "\nevent: x"},
		{"space", "c2 " + valid[2:]},
		{"embedded newline", valid[:4] + "\n" + valid[4:]},
		{"embedded CR", valid[:4] + "\r" + valid[4:]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCursor(tc.in)
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("DecodeCursor(%q) = %+v, %v; want ErrBadCursor", tc.in, c, err)
			}
		})
	}
}

func TestCursorFits(t *testing.T) {
	t.Parallel()
	heads := bus.Heads{{Epoch: 1, First: 5, Last: 10, Chain: 0xabcd_0000_1234}, {Epoch: 2, First: 1, Last: 0}}
	fp := EpochFingerprint(heads)
	cases := []struct {
		name     string
		c        Cursor
		relevant []bool
		fits     bool
	}{
		{"at head", Cursor{fp, []uint64{10, 0}, []uint32{0x1234, 0}}, nil, true},
		{"at head, rewound", Cursor{fp, []uint64{10, 0}, []uint32{0x1235, 0}}, nil, false},
		{"at head, v1 cursor", Cursor{fp, []uint64{10, 0}, nil}, nil, false},
		{"at head, rewound, irrelevant", Cursor{fp, []uint64{10, 0}, []uint32{7, 0}}, []bool{false, true}, true},
		{"oldest resumable", Cursor{fp, []uint64{4, 0}, nil}, nil, true},
		{"older than history", Cursor{fp, []uint64{3, 0}, nil}, nil, false},
		{"ahead", Cursor{fp, []uint64{11, 0}, nil}, nil, false},
		{"ahead in an irrelevant partition", Cursor{fp, []uint64{10, 7}, []uint32{0x1234, 0}}, []bool{true, false}, true},
		{"old in a relevant partition", Cursor{fp, []uint64{1, 0}, nil}, []bool{true, false}, false},
		{"other epoch", Cursor{fp + 1, []uint64{10, 0}, []uint32{0x1234, 0}}, nil, false},
		{"other partition count", Cursor{fp, []uint64{10}, nil}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := tc.c.Fits(heads, tc.relevant)
			if ok != tc.fits {
				t.Fatalf("Fits = %v (%q), want %v", ok, reason, tc.fits)
			}
			if !ok && reason == "" {
				t.Fatal("no reason for a cursor that does not fit")
			}
		})
	}
}

// FuzzDecodeCursor checks that decoding never panics, that whatever
// decodes re-encodes to a URL-safe string that decodes to the same cursor,
// and that cursors built from arbitrary values round-trip.
func FuzzDecodeCursor(f *testing.F) {
	for _, tc := range cursorCases {
		f.Add(tc.c.Encode(), uint32(tc.c.Epoch), []byte{1, 2, 3})
	}
	f.Add("c1", uint32(0), []byte{})
	f.Add("c1AQAAAAAF", uint32(0), []byte{5})
	f.Add("c1AQAAAAAA", uint32(1), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add("garbage\r\n", uint32(2), []byte{0x80})
	f.Fuzz(func(t *testing.T, s string, epoch uint32, raw []byte) {
		if c, err := DecodeCursor(s); err == nil {
			enc := c.Encode()
			if !urlSafeCursor(enc) {
				t.Fatalf("re-encoded %q is not URL-safe", enc)
			}
			c2, err := DecodeCursor(enc)
			if err != nil || !sameCursor(c2, c) {
				t.Fatalf("decode(encode(decode(%q))) = %+v, %v; want %+v", s, c2, err, c)
			}
		} else if !errors.Is(err, ErrBadCursor) {
			t.Fatalf("DecodeCursor(%q): %v is not ErrBadCursor", s, err)
		}

		// Build a cursor from raw: 8 bytes per Seq, the next 4 its check,
		// at least one partition.
		c := Cursor{Epoch: epoch}
		for len(raw) > 0 && len(c.Seqs) < 1024 {
			var b [12]byte
			n := copy(b[:], raw)
			raw = raw[min(n, 8):]
			c.Seqs = append(c.Seqs, binary.LittleEndian.Uint64(b[:8]))
			c.Checks = append(c.Checks, binary.LittleEndian.Uint32(b[8:]))
		}
		if len(c.Seqs) == 0 {
			c.Seqs = []uint64{uint64(epoch)}
		}
		enc := c.Encode()
		if !urlSafeCursor(enc) {
			t.Fatalf("encoded %q is not URL-safe", enc)
		}
		if want := referenceEncode(c); enc != want {
			t.Fatalf("Encode(%+v) = %q, want %q", c, enc, want)
		}
		got, err := DecodeCursor(enc)
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", c, err)
		}
		for p := range c.Seqs { // a Seq of 0 carries no check
			if c.Seqs[p] == 0 && c.Checks != nil {
				c.Checks[p] = 0
			}
		}
		if !sameCursor(got, c) {
			t.Fatalf("decode(encode(%+v)) = %+v", c, got)
		}
	})
}

// TestMaxCursorLen: the limit is the length of the longest cursor the
// protocol allows (every partition there is, every Seq at its widest), so
// nothing a node sends is refused by a client and nothing longer is
// decoded.
func TestMaxCursorLen(t *testing.T) {
	t.Parallel()
	if n := len(binary.AppendUvarint(nil, bus.MaxPartitions)); n != maxCountLen {
		t.Fatalf("uvarint(%d) is %d bytes, maxCountLen is %d", bus.MaxPartitions, n, maxCountLen)
	}
	widest := Cursor{Epoch: math.MaxUint32, Seqs: make([]uint64, bus.MaxPartitions), Checks: make([]uint32, bus.MaxPartitions)}
	for i := range widest.Seqs {
		widest.Seqs[i] = math.MaxUint64
	}
	s := widest.Encode()
	if len(s) != MaxCursorLen {
		t.Fatalf("the widest cursor is %d bytes, MaxCursorLen is %d", len(s), MaxCursorLen)
	}
	if _, err := DecodeCursor(s); err != nil {
		t.Fatalf("the widest cursor does not decode: %v", err)
	}
	if err := ValidateCursor(s); err != nil {
		t.Fatalf("the widest cursor does not validate: %v", err)
	}
	if err := ValidateCursor(s + "A"); err == nil {
		t.Fatal("a cursor longer than MaxCursorLen validates")
	}
	// The case that broke watch's old 1,024-character bound: 256
	// partitions with Seqs near a million.
	mid := Cursor{Seqs: make([]uint64, 256)}
	for i := range mid.Seqs {
		mid.Seqs[i] = 1_000_000
	}
	if s := mid.Encode(); len(s) <= 1024 || ValidateCursor(s) != nil {
		t.Fatalf("256 partitions at seq 1e6: %d bytes, ValidateCursor %v", len(s), ValidateCursor(s))
	}
}

func TestValidateCursor(t *testing.T) {
	t.Parallel()
	for _, tc := range cursorCases {
		if err := ValidateCursor(tc.c.Encode()); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	for _, bad := range []string{"", "c1 x", "c1\nx", "c1+/", "c1=", "c1%41", "c1?a=b", "c1&", "c1:"} {
		if ValidateCursor(bad) == nil {
			t.Errorf("ValidateCursor(%q) accepted", bad)
		}
	}
}

// FuzzValidateCursor: what validates is safe in a URL, a header and a
// file, and within the limit.
func FuzzValidateCursor(f *testing.F) {
	f.Add("c2AQAAAAAA")
	f.Add("c1\r\nevent: x")
	f.Add("a b")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateCursor(s) == nil && (strings.ContainsAny(s, "\r\n:&?=/ %+") || len(s) > MaxCursorLen || s == "") {
			t.Fatalf("ValidateCursor(%q) accepted", s)
		}
	})
}

// TestDecodeCursorV1: a cursor of the older form (no checks) still
// decodes, with every check 0, so it resumes only where the history's chain
// is unknown too.
func TestDecodeCursorV1(t *testing.T) {
	t.Parallel()
	body := binary.AppendUvarint(nil, 2)
	body = binary.BigEndian.AppendUint32(body, 77)
	body = binary.AppendUvarint(body, 300)
	body = binary.AppendUvarint(body, 0)
	c, err := DecodeCursor("c1" + base64.RawURLEncoding.EncodeToString(body))
	if err != nil {
		t.Fatal(err)
	}
	want := Cursor{Epoch: 77, Seqs: []uint64{300, 0}}
	if !sameCursor(c, want) {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	if ok, _ := c.Fits(bus.Heads{{Epoch: 1, First: 1, Last: 300, Chain: 5}, {Epoch: 1, First: 1}}, nil); ok {
		t.Error("a v1 cursor fits a head with a known chain")
	}
	if s := c.Encode(); s[:2] != CursorPrefix {
		t.Errorf("re-encoded as %q, want the current version", s)
	}
}

func TestCursorMerge(t *testing.T) {
	t.Parallel()
	c := Cursor{Epoch: 1, Seqs: []uint64{5, 9, 0}, Checks: []uint32{50, 90, 0}}
	c.Merge(Cursor{Epoch: 1, Seqs: []uint64{7, 3, 2}, Checks: []uint32{70, 30, 20}})
	want := Cursor{Epoch: 1, Seqs: []uint64{7, 9, 2}, Checks: []uint32{70, 90, 20}}
	if !sameCursor(c, want) {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}
