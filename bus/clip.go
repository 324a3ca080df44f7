package bus

import "unicode/utf8"

// Clip shortens s to at most n bytes, cut at a rune boundary, and marks the
// cut with "…". Every error message that quotes caller input goes through
// it, so one huge input (a 1 MB ref name, a hostile token claim) cannot make
// a huge error, log line or JSON body. Callers quote 80 bytes of names and
// 32 or 40 of shorter tokens: enough to recognise the input, never a page.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return Cut(s, n) + "…"
}

// Cut shortens s to at most n bytes, cut at a rune boundary, with no
// mark: for fields with a hard byte limit (a commit subject in an event).
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
