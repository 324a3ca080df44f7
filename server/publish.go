package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// handlePublish serves POST /v1/publish: a hook (or any tool) hands the
// node one push, which is validated and published to the bus. The
// credential is checked before the body is looked at, except that a JWT's
// publish claim needs the push's repo.
func (s *Server) handlePublish(c echo.Context) error {
	r := c.Request()
	// Only the Authorization header counts: a cookie would let any site a
	// logged-in browser visits forge publishes.
	tok := wire.BearerToken(r)
	shared := s.opts.PublishToken != "" && tok != "" &&
		subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.PublishToken)) == 1
	switch {
	case shared:
	case s.opts.Auth == nil && s.opts.PublishToken == "":
		return fmt.Errorf("%w: publishing is disabled on this node (no --publish-token and no auth configured)", ErrForbidden)
	case tok == "":
		return fmt.Errorf("%w: missing Authorization: Bearer token", ErrUnauthorized)
	case s.opts.Auth == nil:
		return fmt.Errorf("%w: wrong publish token", ErrUnauthorized)
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" && !hasPrefix(ct, "application/json;") {
		return &apiError{status: http.StatusUnsupportedMediaType, msg: "Content-Type must be application/json"}
	}
	// A seed may be larger than MaxBody (a repo's whole state, up to
	// bus.MaxRefsPerSeed refs), but only a credential that already checks
	// out may make the node buffer that much: the shared token, or a
	// token that verifies (its repo is authorized once the body is read).
	limit := s.opts.MaxBody
	if shared || (s.opts.Subject != nil && s.opts.Subject(tok) != "") {
		limit = s.opts.MaxSeedBody
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return badRequest(fmt.Errorf("read body: %w", err))
	}
	if int64(len(body)) > limit {
		return &apiError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body larger than %d bytes", limit)}
	}
	p, err := decodePush(body)
	if err != nil {
		return badRequest(err)
	}
	if int64(len(body)) > s.opts.MaxBody && !p.Seed {
		return &apiError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body larger than %d bytes (only a seed from refcast sync may be up to %d)", s.opts.MaxBody, s.opts.MaxSeedBody)}
	}
	if !shared {
		if err := s.opts.Auth.AuthorizePublish(tok, p.Repo); err != nil {
			return err
		}
	}
	if err := p.Validate(); err != nil {
		return badRequest(err)
	}
	evs, err := s.opts.Bus.Publish(r.Context(), p)
	if err != nil {
		if errors.Is(err, bus.ErrInvalid) {
			return badRequest(err)
		}
		s.log.Warn("publish failed", "repo", p.Repo, "err", err)
		return fmt.Errorf("publish: %w", errors.Join(bus.ErrUnavailable, err))
	}
	s.metrics.published.Add(float64(len(evs)))
	return c.JSON(http.StatusOK, wire.Published{Published: len(evs), GitState: s.gitState(r.Context(), p)})
}

// gitCompleter is implemented by buses that can say cheaply whether a
// repo's state is complete for git clients (bus.RefState.Complete).
type gitCompleter interface {
	GitComplete(ctx context.Context, repo string) (bool, error)
}

// gitState is Published.GitState for p: asked only for a non-seed push
// that carried HEAD, i.e. from a publisher able to seed the repo; "" when
// complete, not asked, or not known (a failed read is not worth failing an
// acknowledged publish for: the next push asks again).
func (s *Server) gitState(ctx context.Context, p *bus.Push) string {
	gc, ok := s.opts.Bus.(gitCompleter)
	if !ok || p.ReplacesState() || p.Head == "" {
		return ""
	}
	if complete, err := gc.GitComplete(ctx, p.Repo); err != nil || complete {
		return ""
	}
	return wire.GitStateIncomplete
}

// decodePush parses a publish body strictly: one JSON object of the push
// schema, no unknown fields, no key twice in any object, nothing but white
// space after it, and a valid repo name (what authorization needs). The
// rest is checked by Push.Validate.
func decodePush(body []byte) (*bus.Push, error) {
	var p bus.Push
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("body is not a valid push: %s", jsonErr(err))
	}
	// Decoder.More reports false for a stray '}' or ']', so the tail is
	// checked byte by byte. Positions count from 1, as in jsonErr's syntax
	// errors.
	for i := dec.InputOffset(); i < int64(len(body)); i++ {
		switch body[i] {
		case ' ', '\t', '\r', '\n':
		default:
			return nil, fmt.Errorf("body is not a valid push: trailing data after the JSON object at byte %d", i+1)
		}
	}
	if err := checkDuplicateKeys(body); err != nil {
		return nil, fmt.Errorf("body is not a valid push: %w", err)
	}
	if err := bus.ValidateRepo(p.Repo); err != nil {
		return nil, err
	}
	return &p, nil
}

// checkDuplicateKeys refuses a JSON value in which an object, at any depth,
// has a key twice: encoding/json keeps the last, so {"repo":"a","repo":"b"}
// would be authorized for one repo by a proxy that reads the first and
// published to another. Keys are compared as encoding/json matches them to
// fields (after unescaping, case-insensitively with Unicode simple
// folding), so "Repo" or "re\u0070o" duplicate "repo" too. body must be
// valid JSON (decodePush has decoded it).
//
// It scans the bytes once, linear in len(body) (MaxBody bounds it), and
// allocates only for a key with an escape or a non-ASCII byte, or an
// object of more than smallObject keys. It replaced a walk over
// json.Decoder.Token, which boxes every token: decoding a hook's 3-ref
// push took 37 µs and 439 allocations with it, 12 µs and 41 now
// (BenchmarkDecodePush; FuzzDuplicateKeys checks they agree).
func checkDuplicateKeys(body []byte) error {
	var sc keyScanner
	return sc.scan(body)
}

// smallObject is how many keys an object's check compares one by one
// before it switches to a map: a push's objects have at most 9.
const smallObject = 16

// keyScanner holds checkDuplicateKeys' state. Every open object's folded
// keys are appended to folded, their ends to ends; an object's keys are
// ends[level.first:].
type keyScanner struct {
	folded []byte
	ends   []int
	stack  []keyLevel
	buf    [512]byte // folded's first array: a push's keys fit
	eBuf   [32]int
	sBuf   [8]keyLevel
}

type keyLevel struct {
	object  bool
	wantKey bool                // the next string is a key
	first   int                 // this object's first key in ends
	start   int                 // where its keys begin in folded
	keys    map[string]struct{} // past smallObject keys
}

func (sc *keyScanner) scan(body []byte) error {
	sc.folded, sc.ends, sc.stack = sc.buf[:0], sc.eBuf[:0], sc.sBuf[:0]
	for i := 0; i < len(body); {
		switch c := body[i]; c {
		case '{', '[':
			sc.stack = append(sc.stack, keyLevel{object: c == '{', wantKey: c == '{', first: len(sc.ends), start: len(sc.folded)})
			i++
		case '}', ']':
			if len(sc.stack) == 0 {
				return fmt.Errorf("scan keys: unbalanced %q at byte %d", c, i+1)
			}
			top := sc.stack[len(sc.stack)-1]
			sc.folded, sc.ends = sc.folded[:top.start], sc.ends[:top.first]
			sc.stack = sc.stack[:len(sc.stack)-1]
			i++
		case ',':
			if n := len(sc.stack); n > 0 && sc.stack[n-1].object {
				sc.stack[n-1].wantKey = true
			}
			i++
		case '"':
			end, plain := stringEnd(body, i)
			if end < 0 {
				return fmt.Errorf("scan keys: unterminated string at byte %d", i+1)
			}
			if n := len(sc.stack); n > 0 && sc.stack[n-1].wantKey {
				sc.stack[n-1].wantKey = false
				if err := sc.key(&sc.stack[n-1], body[i:end], plain); err != nil {
					return err
				}
			}
			i = end
		default:
			i++ // white space, ':', and numbers, true, false and null
		}
	}
	return nil
}

// stringEnd returns the index after the string literal starting at
// body[i] ('"'), or -1, and whether it is plain: ASCII without escapes.
func stringEnd(body []byte, i int) (int, bool) {
	plain := true
	for j := i + 1; j < len(body); j++ {
		switch c := body[j]; {
		case c == '"':
			return j + 1, plain
		case c == '\\':
			plain = false
			j++ // the escaped byte cannot end the string
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
	return -1, false
}

// key records one key of top, the quoted literal lit, and refuses it if top
// has it already.
func (sc *keyScanner) key(top *keyLevel, lit []byte, plain bool) error {
	start := len(sc.folded)
	if plain {
		// foldKey's representative of an ASCII letter is its upper case.
		for _, c := range lit[1 : len(lit)-1] {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			sc.folded = append(sc.folded, c)
		}
	} else {
		var k string
		if err := json.Unmarshal(lit, &k); err != nil {
			return fmt.Errorf("scan keys: %s", jsonErr(err))
		}
		sc.folded = append(sc.folded, foldKey(k)...)
	}
	f := sc.folded[start:]
	dup := false
	switch {
	case top.keys != nil:
		_, dup = top.keys[string(f)]
	default:
		prev := top.start
		for _, end := range sc.ends[top.first:] {
			if bytes.Equal(sc.folded[prev:end], f) {
				dup = true
				break
			}
			prev = end
		}
	}
	if dup {
		k := string(lit[1 : len(lit)-1])
		if !plain {
			_ = json.Unmarshal(lit, &k)
		}
		return fmt.Errorf("duplicate key %q", bus.Clip(k, 40))
	}
	sc.ends = append(sc.ends, len(sc.folded))
	switch n := len(sc.ends) - top.first; {
	case top.keys != nil:
		top.keys[string(f)] = struct{}{}
	case n > smallObject:
		top.keys = make(map[string]struct{}, 2*n)
		prev := top.start
		for _, end := range sc.ends[top.first:] {
			top.keys[string(sc.folded[prev:end])] = struct{}{}
			prev = end
		}
	}
	return nil
}

// foldKey maps a key to the representative of what encoding/json treats as
// the same field name: each rune to the smallest rune of its simple-fold
// orbit (so 'K', 'k' and the Kelvin sign are one).
func foldKey(k string) string {
	b := make([]rune, 0, len(k))
	for _, r := range k {
		for {
			r2 := unicode.SimpleFold(r)
			if r2 <= r {
				r = r2
				break
			}
			r = r2
		}
		b = append(b, r)
	}
	return string(b)
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// jsonErr shortens a decoding error to what the client needs.
func jsonErr(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("JSON syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, te.Type)
	case errors.Is(err, io.EOF):
		return "empty body"
	}
	return bus.Clip(err.Error(), 40)
}
