package auth

import (
	"strings"

	"github.com/refcast/refcast/bus"
)

// Pattern inclusion: does a claim's pattern match every name a
// subscription's pattern can match? Overlap is not enough: a claim for
// "acme/*" must not let "acme/**" or "*" through.
//
// The check treats each '*' (and "**" segment) of the subscription as an
// opaque symbol that only a wildcard of the claim can absorb. If the claim
// matches the subscription pattern read that way, it matches every
// instance of it: a literal piece of the claim matched literal text, which
// every instance keeps, and a wildcard of the claim absorbed the
// subscription's wildcard together with whatever that wildcard stands for.
// It is exact when the subscription names one repo or ref. With wildcards on
// both sides it can refuse a covered case (claim "a/*/**" vs subscription
// "a/**/*": both mean "below a/"), never grant an uncovered one.

// RepoCovers reports whether every repo name sub matches is matched by
// claim. '*' matches within one segment, "**" any number of segments
// (zero included), as in bus.RepoPattern.
func RepoCovers(claim, sub bus.RepoPattern) bool {
	c := strings.Split(claim.String(), "/")
	s := strings.Split(sub.String(), "/")
	// ok[i*(m+1)+j]: claim segments c[i:] cover subscription segments s[j:].
	// Filled from the end, so each cell is computed once: O(n*m) segment
	// checks however many "**" there are.
	n, m := len(c), len(s)
	ok := make([]bool, (n+1)*(m+1))
	at := func(i, j int) *bool { return &ok[i*(m+1)+j] }
	*at(n, m) = true
	for i := n - 1; i >= 0; i-- {
		for j := m; j >= 0; j-- {
			if c[i] == "**" {
				// Absorb nothing more, or absorb s[j] (a segment or a "**").
				*at(i, j) = *at(i+1, j) || (j < m && *at(i, j+1))
				continue
			}
			*at(i, j) = j < m && s[j] != "**" && globCovers(strings.Split(c[i], "*"), s[j]) && *at(i+1, j+1)
		}
	}
	return *at(0, 0)
}

// RefCovers reports whether every ref sub matches is matched by claim.
// Both must be positive patterns; '*' crosses '/' as in bus.RefPattern.
func RefCovers(claim, sub bus.RefPattern) bool {
	if claim.Negate || sub.Negate {
		return false
	}
	return globCovers(strings.Split(claim.String(), "*"), sub.String())
}

// allRefs stands for a subscription with no positive ref pattern: every
// valid ref starts with "refs/" (bus.ValidateRef), so "refs/*" matches all.
const allRefs = "refs/*"

func refCoversAll(claim bus.RefPattern) bool {
	return !claim.Negate && globCovers(strings.Split(claim.String(), "*"), allRefs)
}

// globCovers matches s, a pattern whose '*' are opaque symbols, against
// the literal parts of a star glob (parts never contain '*', so they can
// only match literal text of s; the claim's stars absorb the rest).
// Taking the leftmost occurrence of each middle part is optimal for
// star-only globs.
func globCovers(parts []string, s string) bool {
	if len(parts) == 1 {
		return s == parts[0]
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}
