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
// valid JSON (decodePush has decoded it). One pass over the tokens: linear
// in len(body), which MaxBody bounds, with one set of keys per open object.
func checkDuplicateKeys(body []byte) error {
	type frame struct {
		keys    map[string]struct{} // nil for an array
		wantKey bool                // in an object, the next token is a key
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers are skipped; no float conversion
	var stack []frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("scan keys: %s", jsonErr(err))
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			top := &stack[n-1]
			if top.wantKey {
				k, _ := tok.(string)
				f := foldKey(k)
				if _, dup := top.keys[f]; dup {
					return fmt.Errorf("duplicate key %q", bus.Clip(k, 40))
				}
				top.keys[f] = struct{}{}
				top.wantKey = false
				continue
			}
			top.wantKey = true // this token is the value; a key comes next
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]struct{}{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		}
	}
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
