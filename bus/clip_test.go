package bus

import (
	"testing"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	tests := []struct {
		name string
		s    string
		n    int
		want string
	}{
		{"short", "refs/heads/main", 80, "refs/heads/main"},
		{"exact", "abcd", 4, "abcd"},
		{"cut", "abcdef", 4, "abcd…"},
		{"rune boundary", "ab€d", 3, "ab…"}, // € is 3 bytes: not split
		{"zero", "abc", 0, "…"},
		{"negative", "abc", -1, "…"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Clip(tc.s, tc.n)
			if got != tc.want {
				t.Errorf("Clip(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("Clip(%q, %d) = %q, not valid UTF-8", tc.s, tc.n, got)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	id := "1111111111111111111111111111111111111111"
	tests := []struct {
		name     string
		old, new string
		want     Kind
	}{
		{"create", ZeroSHA1, id, KindCreate},
		{"delete", id, ZeroSHA1, KindDelete},
		{"update", id, "2222222222222222222222222222222222222222", KindUpdate},
		{"created then deleted", ZeroSHA1, ZeroSHA1, KindDelete},
		{"sha256 create", ZeroSHA256, id + "000000000000000000000001", KindCreate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(tc.old, tc.new); got != tc.want {
				t.Errorf("KindOf(%s, %s) = %s, want %s", tc.old, tc.new, got, tc.want)
			}
			if got := (RefUpdate{Old: tc.old, New: tc.new}).Kind(); got != tc.want {
				t.Errorf("RefUpdate.Kind = %s, want %s", got, tc.want)
			}
		})
	}
}
