package hook

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/refcast/refcast/bus"
)

// MaxLineLen bounds one stdin line: two 64-digit ids, a ref name of at most
// bus.MaxRefLen bytes and the separators.
const MaxLineLen = 2*64 + 2 + bus.MaxRefLen

// ErrMalformed wraps every stdin parse error: git (or whoever ran the hook)
// sent something that is not "<old> <new> <ref>" lines.
var ErrMalformed = errors.New("malformed input")

// LineError is a parse failure on one stdin line, numbered from 1.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ParseMode says which hook's stdin is parsed.
type ParseMode int

const (
	// PostReceive input: every line must be a valid update of a ref under
	// refs/, with old != new (git never sends anything else there).
	PostReceive ParseMode = iota
	// ReferenceTransaction input: lines for names outside refs/ (HEAD,
	// ORIG_HEAD, FETCH_HEAD, ...), symbolic-ref lines ("ref:<target>") and
	// no-op lines where old == new are skipped, except zero -> zero, which
	// git sends for a delete it did not verify; the rest must be valid.
	ReferenceTransaction
)

// ParseUpdates reads git's hook input, one "<old> <new> <ref>" line per
// update, strictly: a malformed line is an error naming its line number
// (a *LineError wrapping ErrMalformed). Object ids must be lowercase hex of
// one length (SHA-1 or SHA-256) throughout, refs valid by bus.ValidateRef,
// and no ref may appear twice. An empty input yields no updates and no error.
func ParseUpdates(r io.Reader, mode ParseMode) ([]bus.RefUpdate, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLineLen+1)
	sc.Split(scanLines)
	var (
		out    []bus.RefUpdate
		seen   = map[string]int{}
		idLen  int
		lineNo int
	)
	fail := func(format string, a ...any) error {
		return &LineError{Line: lineNo, Err: fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)}
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if strings.HasSuffix(line, "\r") {
			return out, fail("carriage return at end of line")
		}
		old, rest, ok1 := strings.Cut(line, " ")
		nw, ref, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 {
			return out, fail("want \"<old> <new> <ref>\", got %q", bus.Clip(line, 80))
		}
		if mode == ReferenceTransaction {
			// Symbolic-ref updates (git >= 2.46) carry "ref:<target>" values;
			// HEAD and friends are not refs subscribers follow.
			if strings.HasPrefix(old, "ref:") || strings.HasPrefix(nw, "ref:") {
				continue
			}
			if !strings.HasPrefix(ref, "refs/") {
				if err := checkIDs(old, nw, &idLen); err != nil {
					return out, fail("%v", err)
				}
				continue
			}
		}
		if err := checkIDs(old, nw, &idLen); err != nil {
			return out, fail("%v", err)
		}
		if err := bus.ValidateRef(ref); err != nil {
			return out, fail("%v", unwrapInvalid(err))
		}
		if old == nw {
			if mode == ReferenceTransaction {
				// zero -> zero is a delete whose old value git did not
				// verify (`git update-ref -d REF`); the caller resolves it.
				// Any other no-op is dropped.
				if !bus.IsZeroID(old) {
					continue
				}
			} else {
				return out, fail("old and new ids are equal for %s", ref)
			}
		}
		if prev, dup := seen[ref]; dup {
			return out, fail("ref %s already updated on line %d", ref, prev)
		}
		seen[ref] = lineNo
		out = append(out, bus.RefUpdate{Ref: ref, Old: old, New: nw})
	}
	if err := sc.Err(); err != nil {
		lineNo++
		if errors.Is(err, bufio.ErrTooLong) {
			return out, fail("line longer than %d bytes", MaxLineLen)
		}
		return out, fmt.Errorf("read hook input: %w", err)
	}
	return out, nil
}

// idLens is the object id length, in hex digits, of each object format
// git knows (`git rev-parse --show-object-format`).
var idLens = map[string]int{"sha1": 40, "sha256": 64}

// CheckObjectFormat refuses updates whose ids do not have the length of
// the repository's object format ("sha1": 40 hex digits, "sha256": 64):
// git never sends such a line, so it comes from someone piping input by
// hand, and publishing it would announce objects the repository cannot
// have. The error names the first such ref and is meant for the pusher.
// A format this version does not know is not checked here (bus
// validation still accepts only 40 or 64 digits).
func CheckObjectFormat(ups []bus.RefUpdate, format string) error {
	want, ok := idLens[format]
	if !ok {
		return nil
	}
	for _, u := range ups {
		for _, id := range []string{u.Old, u.New} {
			if len(id) != want {
				return fmt.Errorf("%w: %s: object id %s has %d hex digits, but this repository's object format is %s (%d)",
					ErrMalformed, u.Ref, bus.Clip(id, 80), len(id), format, want)
			}
		}
	}
	return nil
}

// checkIDs validates both ids and that every id of the input has one length.
func checkIDs(old, nw string, idLen *int) error {
	for _, id := range []string{old, nw} {
		if err := bus.ValidateObjectID(id); err != nil {
			return unwrapInvalid(err)
		}
		if *idLen == 0 {
			*idLen = len(id)
		} else if len(id) != *idLen {
			return errors.New("object ids mix SHA-1 and SHA-256 lengths")
		}
	}
	return nil
}

// unwrapInvalid drops the "invalid: " prefix of a bus validation error, as
// the LineError already says the input is malformed.
func unwrapInvalid(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), bus.ErrInvalid.Error()+": "))
}

// scanLines is bufio.ScanLines without its dropping of a trailing '\r', so
// a CR is reported instead of silently accepted.
func scanLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}
