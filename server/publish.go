package server

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

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
	body, err := io.ReadAll(io.LimitReader(r.Body, s.opts.MaxBody+1))
	if err != nil {
		return badRequest(fmt.Errorf("read body: %w", err))
	}
	if int64(len(body)) > s.opts.MaxBody {
		return &apiError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body larger than %d bytes", s.opts.MaxBody)}
	}
	p, err := decodePush(body)
	if err != nil {
		return badRequest(err)
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
	return c.JSON(http.StatusOK, wire.Published{Published: len(evs)})
}

// decodePush parses a publish body strictly: one JSON object of the push
// schema, no unknown fields, nothing after it, and a valid repo name (what
// authorization needs). The rest is checked by Push.Validate.
func decodePush(body []byte) (*bus.Push, error) {
	var p bus.Push
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("body is not a valid push: %s", jsonErr(err))
	}
	if dec.More() {
		return nil, errors.New("body has data after the push object")
	}
	if err := bus.ValidateRepo(p.Repo); err != nil {
		return nil, err
	}
	return &p, nil
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
