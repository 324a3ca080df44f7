package bus

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on names. They bound Redis keys, log lines and SSE frames.
const (
	MaxRepoLen        = 255
	MaxRepoSegmentLen = 100
	MaxRefLen         = 1024
)

// ValidateRepo checks a repository name: one or more '/'-separated segments,
// each starting with a letter, digit or '_' and otherwise made of letters,
// digits, '.', '_' and '-'; at most MaxRepoLen bytes in all. Segments may not
// end in ".git" or ".lock" so that "acme/app" and "acme/app.git" cannot be two
// names for one repository. This charset is safe in Redis keys, URLs and
// logs without escaping.
func ValidateRepo(s string) error {
	if s == "" {
		return fmt.Errorf("%w: repo name is empty", ErrInvalid)
	}
	if len(s) > MaxRepoLen {
		return fmt.Errorf("%w: repo name is %d bytes, at most %d allowed", ErrInvalid, len(s), MaxRepoLen)
	}
	for seg := range strings.SplitSeq(s, "/") {
		if err := validateRepoSegment(seg); err != nil {
			return fmt.Errorf("%w: repo name %q: %s", ErrInvalid, s, err)
		}
	}
	return nil
}

// repoSegmentError is a reason without the wrapping, so pattern and name
// validation can share it.
type repoSegmentError string

func (e repoSegmentError) Error() string { return string(e) }

func validateRepoSegment(seg string) error {
	if seg == "" {
		return repoSegmentError("empty path segment (leading, trailing or double '/')")
	}
	if len(seg) > MaxRepoSegmentLen {
		return repoSegmentError(fmt.Sprintf("segment longer than %d bytes", MaxRepoSegmentLen))
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		case c == '.' || c == '-':
			return repoSegmentError(fmt.Sprintf("segment %q must start with a letter, digit or '_'", seg))
		default:
			return repoSegmentError(fmt.Sprintf("character %q not allowed (letters, digits, '.', '_', '-' and '/' only)", rune(c)))
		}
	}
	if strings.HasSuffix(seg, ".git") || strings.HasSuffix(seg, ".lock") {
		return repoSegmentError(fmt.Sprintf("segment %q must not end in .git or .lock", seg))
	}
	return nil
}

// ValidateRef checks a full ref name by the rules of git check-ref-format,
// restricted to names under refs/ (what pushes and transactions update) and
// to valid UTF-8 (events are JSON).
func ValidateRef(s string) error {
	if err := checkRefFormat(s, false); err != nil {
		return fmt.Errorf("%w: ref %q: %s", ErrInvalid, Clip(s, 80), err)
	}
	return nil
}

func checkRefFormat(s string, glob bool) error {
	switch {
	case s == "":
		return refError("empty")
	case len(s) > MaxRefLen:
		return refError(fmt.Sprintf("longer than %d bytes", MaxRefLen))
	case !strings.HasPrefix(s, "refs/") || len(s) == len("refs/"):
		return refError("must start with refs/ and name something below it")
	case !utf8.ValidString(s):
		return refError("not valid UTF-8")
	case strings.HasSuffix(s, "/"):
		return refError("must not end with '/'")
	case strings.HasSuffix(s, "."):
		return refError("must not end with '.'")
	case strings.Contains(s, "//"):
		return refError("must not contain '//'")
	case strings.Contains(s, ".."):
		return refError("must not contain '..'")
	case strings.Contains(s, "@{"):
		return refError("must not contain '@{'")
	}
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			return refError("must not contain control characters")
		case r == ' ', r == '~', r == '^', r == ':', r == '?', r == '[', r == '\\':
			return refError(fmt.Sprintf("must not contain %q", r))
		case r == '*' && !glob:
			return refError("must not contain '*'")
		}
	}
	for comp := range strings.SplitSeq(s, "/") {
		if strings.HasPrefix(comp, ".") {
			return refError("no component may start with '.'")
		}
		if strings.HasSuffix(comp, ".lock") {
			return refError("no component may end with .lock")
		}
	}
	return nil
}

type refError string

func (e refError) Error() string { return string(e) }

// ZeroSHA1 and ZeroSHA256 are git's "no object" ids for the two hash formats.
const (
	ZeroSHA1   = "0000000000000000000000000000000000000000"
	ZeroSHA256 = ZeroSHA1 + "000000000000000000000000"
)

// ValidateObjectID accepts a lowercase hex SHA-1 (40) or SHA-256 (64) id.
func ValidateObjectID(s string) error {
	if len(s) != 40 && len(s) != 64 {
		return fmt.Errorf("%w: object id %q must be 40 (SHA-1) or 64 (SHA-256) hex digits", ErrInvalid, Clip(s, 80))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: object id %q must be lowercase hex", ErrInvalid, Clip(s, 80))
		}
	}
	return nil
}

// IsZeroID reports whether s is the all-zero id of either hash format.
func IsZeroID(s string) bool { return s == ZeroSHA1 || s == ZeroSHA256 }

// ValidatePushID accepts 1 to MaxPushIDLen characters of [A-Za-z0-9._:-].
func ValidatePushID(s string) error {
	if s == "" || len(s) > MaxPushIDLen {
		return fmt.Errorf("%w: push id must be 1 to %d characters", ErrInvalid, MaxPushIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != ':' && c != '-' {
			return fmt.Errorf("%w: push id may contain only letters, digits, '.', '_', ':' and '-'", ErrInvalid)
		}
	}
	return nil
}
