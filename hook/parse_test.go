package hook

import (
	"errors"
	"strings"
	"testing"

	"github.com/refcast/refcast/bus"
)

const (
	idA = "1111111111111111111111111111111111111111"
	idB = "2222222222222222222222222222222222222222"
	idC = "3333333333333333333333333333333333333333"
	z1  = bus.ZeroSHA1
	s2A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
)

var parseCases = []struct {
	name    string
	mode    ParseMode
	in      string
	want    int    // updates
	errLine int    // 0: no error
	errText string // substring of the error
}{
	{name: "empty", in: "", want: 0},
	{name: "one update", in: idA + " " + idB + " refs/heads/main\n", want: 1},
	{name: "no final newline", in: idA + " " + idB + " refs/heads/main", want: 1},
	{name: "create and delete", in: z1 + " " + idB + " refs/heads/new\n" + idA + " " + z1 + " refs/tags/old\n", want: 2},
	{name: "sha256", in: strings.Repeat("0", 64) + " " + s2A + " refs/heads/main\n", want: 1},
	{name: "ref with spaces is the rest", in: idA + " " + idB + " refs/heads/a b\n", errLine: 1, errText: "must not contain ' '"},
	{name: "two fields", in: idA + " " + idB + " refs/heads/ok\n" + idA + " " + idB + "\n", errLine: 2, errText: "want"},
	{name: "uppercase id", in: "ABCDEF" + idA[6:] + " " + idB + " refs/heads/x\n", errLine: 1, errText: "lowercase hex"},
	{name: "short id", in: "abc " + idB + " refs/heads/x\n", errLine: 1, errText: "40 (SHA-1)"},
	{name: "mixed lengths", in: idA + " " + s2A + " refs/heads/x\n", errLine: 1, errText: "mix"},
	{name: "mixed lengths across lines", in: idA + " " + idB + " refs/heads/x\n" + strings.Repeat("0", 64) + " " + s2A + " refs/heads/y\n", errLine: 2, errText: "mix"},
	{name: "not under refs", in: idA + " " + idB + " HEAD\n", errLine: 1, errText: "refs/"},
	{name: "duplicate ref", in: idA + " " + idB + " refs/heads/x\n" + idB + " " + idC + " refs/heads/x\n" + idA + " " + idB + " refs/heads/y\n", errLine: 2, errText: "line 1"},
	{name: "no-op in post-receive", in: idA + " " + idA + " refs/heads/x\n", errLine: 1, errText: "equal"},
	{name: "crlf", in: idA + " " + idB + " refs/heads/x\r\n", errLine: 1, errText: "carriage"},
	{name: "blank line", in: idA + " " + idB + " refs/heads/x\n\n", errLine: 2, errText: "want"},
	{name: "double space", in: idA + "  " + idB + " refs/heads/x\n", errLine: 1},
	{name: "bad ref", in: idA + " " + idB + " refs/heads/a..b\n", errLine: 1, errText: ".."},
	{name: "too long line", in: idA + " " + idB + " refs/" + strings.Repeat("x", MaxLineLen) + "\n", errLine: 1, errText: "longer"},
	{name: "txn skips HEAD and no-ops", mode: ReferenceTransaction, in: z1 + " " + idB + " HEAD\n" + idA + " " + idA + " refs/heads/x\n" + z1 + " " + idB + " refs/heads/main\n" + idA + " " + idB + " ORIG_HEAD\n", want: 1},
	{name: "txn keeps unverified delete", mode: ReferenceTransaction, in: z1 + " " + z1 + " refs/heads/gone\n", want: 1},
	{name: "txn skips symref lines", mode: ReferenceTransaction, in: "ref:refs/heads/a ref:refs/heads/b HEAD\n" + z1 + " ref:refs/heads/main refs/remotes/origin/HEAD\n", want: 0},
	{name: "txn still strict", mode: ReferenceTransaction, in: "garbage\n", errLine: 1},
	{name: "txn bad id on HEAD line", mode: ReferenceTransaction, in: "xyz " + idB + " HEAD\n", errLine: 1},
}

func TestParseUpdates(t *testing.T) {
	t.Parallel()
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			ups, err := ParseUpdates(strings.NewReader(tc.in), tc.mode)
			if tc.errLine != 0 {
				var le *LineError
				if !errors.As(err, &le) || le.Line != tc.errLine || !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want a malformed-input error on line %d", err, tc.errLine)
				}
				if !strings.HasPrefix(err.Error(), "line ") || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %q, want it to start with the line and contain %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ups) != tc.want {
				t.Fatalf("got %d updates %v, want %d", len(ups), ups, tc.want)
			}
		})
	}
}

// FuzzParseUpdates checks that the parser never panics, that everything it
// accepts is a valid update, and that accepted input round-trips.
func FuzzParseUpdates(f *testing.F) {
	for _, tc := range parseCases {
		f.Add(tc.in, tc.mode == ReferenceTransaction)
	}
	f.Fuzz(func(t *testing.T, in string, txn bool) {
		mode := PostReceive
		if txn {
			mode = ReferenceTransaction
		}
		ups, err := ParseUpdates(strings.NewReader(in), mode)
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || le.Line < 1 {
				t.Fatalf("error without a line number: %v", err)
			}
			return
		}
		var sb strings.Builder
		seen := map[string]bool{}
		for _, u := range ups {
			if bus.ValidateRef(u.Ref) != nil || bus.ValidateObjectID(u.Old) != nil || bus.ValidateObjectID(u.New) != nil {
				t.Fatalf("accepted an invalid update %+v", u)
			}
			if seen[u.Ref] || strings.ContainsAny(u.Ref, "\r\n") {
				t.Fatalf("accepted %q twice or with a line break", u.Ref)
			}
			seen[u.Ref] = true
			if u.Old == u.New && (mode == PostReceive || !bus.IsZeroID(u.Old)) {
				t.Fatalf("accepted a no-op %+v", u)
			}
			sb.WriteString(u.Old + " " + u.New + " " + u.Ref + "\n")
		}
		again, err := ParseUpdates(strings.NewReader(sb.String()), mode)
		if err != nil || len(again) != len(ups) {
			t.Fatalf("round trip: %v, %d vs %d updates", err, len(again), len(ups))
		}
	})
}

// TestCheckObjectFormat: ids must have the length of the repository's
// object format; the error names the ref and both lengths.
func TestCheckObjectFormat(t *testing.T) {
	t.Parallel()
	a1, b1 := strings.Repeat("a", 40), strings.Repeat("b", 40)
	a2, b2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
	cases := []struct {
		name, format string
		ups          []bus.RefUpdate
		want         string // "" accepts
	}{
		{"sha1 ids in sha1", "sha1", []bus.RefUpdate{{Ref: "refs/heads/main", Old: a1, New: b1}}, ""},
		{"sha256 ids in sha256", "sha256", []bus.RefUpdate{{Ref: "refs/heads/main", Old: a2, New: b2}}, ""},
		{"zero ids of the format", "sha256", []bus.RefUpdate{{Ref: "refs/heads/new", Old: bus.ZeroSHA256, New: b2}}, ""},
		{"sha256 ids in sha1", "sha1", []bus.RefUpdate{{Ref: "refs/heads/main", Old: a2, New: b2}},
			"refs/heads/main: object id " + a2 + " has 64 hex digits, but this repository's object format is sha1 (40)"},
		{"sha1 ids in sha256", "sha256", []bus.RefUpdate{{Ref: "refs/heads/main", Old: a2, New: b2}, {Ref: "refs/tags/v1", Old: bus.ZeroSHA1, New: b1}},
			"refs/tags/v1: object id " + bus.ZeroSHA1 + " has 40 hex digits, but this repository's object format is sha256 (64)"},
		{"unknown format left to bus validation", "sha3", []bus.RefUpdate{{Ref: "refs/heads/main", Old: a1, New: b1}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckObjectFormat(tc.ups, tc.format)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrMalformed containing %q", err, tc.want)
			}
		})
	}
}
