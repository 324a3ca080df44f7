package forge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/refcast/refcast/bus"
)

// The payload fields the forges share in shape, decoded leniently: unknown
// fields are ignored, because forges add fields without notice.

type person struct {
	Name     string `json:"name"`
	Username string `json:"username"`
	Login    string `json:"login"`
}

type commitJSON struct {
	ID        string `json:"id"`
	Message   string `json:"message"`
	Timestamp string `json:"timestamp"`
	Author    person `json:"author"`
}

// decode parses a JSON body; a body that is not one JSON object is
// malformed.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: body is not a JSON object: %s", ErrMalformed, bus.Clip(err.Error(), 80))
	}
	return nil
}

// deliveryID makes the push id of a delivery: "<forge>:<id>", so two forges'
// ids can never collide.
func deliveryID(f Forge, h http.Header, names ...string) (string, error) {
	for _, name := range names {
		v := h.Get(name)
		if v == "" {
			continue
		}
		id := string(f) + ":" + v
		if err := bus.ValidatePushID(id); err != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrMalformed, name, err)
		}
		return id, nil
	}
	return "", fmt.Errorf("%w: missing %s header (the delivery id)", ErrMalformed, names[0])
}

// update builds a validated ref update; field prefixes the payload field
// names in errors ("" for top-level fields).
func update(ref, old, new, field string) (bus.RefUpdate, error) {
	if err := bus.ValidateRef(ref); err != nil {
		return bus.RefUpdate{}, fmt.Errorf("%w: %sref: %v", ErrUnacceptable, field, err)
	}
	for _, f := range []struct{ name, v string }{{"before", old}, {"after", new}} {
		if err := bus.ValidateObjectID(f.v); err != nil {
			return bus.RefUpdate{}, fmt.Errorf("%w: %s%s: %v", ErrUnacceptable, field, f.name, err)
		}
	}
	if len(old) != len(new) {
		return bus.RefUpdate{}, fmt.Errorf("%w: %sbefore and %safter differ in length", ErrUnacceptable, field, field)
	}
	if old == new {
		return bus.RefUpdate{}, fmt.Errorf("%w: %sbefore and %safter are equal: nothing changed", ErrUnacceptable, field, field)
	}
	return bus.RefUpdate{Ref: ref, Old: old, New: new}, nil
}

// headCommit is the enrichment of a commit a payload describes.
func headCommit(message, author, ts string) *bus.Commit {
	subject, _, _ := strings.Cut(message, "\n")
	c := &bus.Commit{
		Subject: bus.Cut(strings.ToValidUTF8(strings.TrimRight(subject, "\r"), "\uFFFD"), bus.MaxSubjectLen),
		Author:  bus.Cut(strings.ToValidUTF8(author, "\uFFFD"), bus.MaxSubjectLen),
	}
	if t, err := time.Parse(time.RFC3339, ts); err == nil {
		c.Time = t
	}
	if c.Subject == "" && c.Author == "" && c.Time.IsZero() {
		return nil
	}
	return c
}

// pusher is the first non-empty name, cut to the limit.
func pusher(names ...string) string {
	for _, n := range names {
		if n != "" {
			return bus.Cut(strings.ToValidUTF8(n, "\uFFFD"), bus.MaxPusherLen)
		}
	}
	return ""
}

// finish validates a translated push; every error is the payload's fault.
func finish(p *bus.Push) (*bus.Push, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnacceptable, err)
	}
	return p, nil
}

func isTag(ref string) bool { return strings.HasPrefix(ref, "refs/tags/") }
