// Package forge turns the push webhooks of hosted forges (GitHub, GitLab,
// Gitea, Bitbucket Cloud and Data Center) into refcast pushes: it verifies
// a delivery's signature or token against the configured secrets, then
// translates the forge's payload into one bus.Push whose id is the
// delivery id, so a redelivery publishes nothing twice.
//
// It is not an HTTP handler and knows nothing about echo: server/webhooks.go
// adapts it, and publishes what it returns through the node's publish path.
// It does not call the forges back (no API tokens, no fetching of commits):
// what a push event carries is all it reports.
package forge

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/refcast/refcast/bus"
)

// Forge names a supported forge; it is also the Source of the pushes it
// produces and the last segment of its endpoint, /v1/hooks/<forge>.
type Forge string

// The supported forges.
const (
	GitHub    Forge = "github"
	GitLab    Forge = "gitlab"
	Gitea     Forge = "gitea"
	Bitbucket Forge = "bitbucket"
)

// Forges lists every supported forge, in the order endpoints are documented.
var Forges = []Forge{GitHub, GitLab, Gitea, Bitbucket}

// DefaultMaxBody is the largest delivery accepted: GitHub caps its payloads
// at 25 MB and drops larger ones, and the other forges send less.
const DefaultMaxBody = 25 << 20

// Errors Receive returns, wrapped with a message a forge's delivery log can
// show. The server maps each to one status.
var (
	// ErrUnauthorized: the signature or token is missing or wrong, or the
	// secret that signed is not one for the payload's repo (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrTooLarge: the body is longer than MaxBody (413).
	ErrTooLarge = errors.New("body too large")
	// ErrContentType: the body is not application/json, e.g. GitHub's
	// application/x-www-form-urlencoded option (415).
	ErrContentType = errors.New("unsupported content type")
	// ErrMalformed: the body is not JSON, or a required header such as the
	// delivery id is missing (400).
	ErrMalformed = errors.New("malformed delivery")
	// ErrUnacceptable: the payload is JSON but names a repo, ref or object
	// id refcast cannot accept; the message names the field (422).
	ErrUnacceptable = errors.New("unacceptable payload")
)

// Delivery is a verified webhook request.
type Delivery struct {
	Forge Forge
	// Event is the forge's event name ("push", "Push Hook", "repo:push").
	Event string
	// Ping is a forge's test delivery ("ping", "diagnostics:ping"): answer
	// it with success and publish nothing.
	Ping bool
	// Push is the push to publish; nil for events other than pushes, which
	// are acknowledged and ignored.
	Push *bus.Push
}

// Receiver verifies and translates deliveries. Its fields are set before
// the first Receive and not changed after; Receive is then safe for
// concurrent use.
type Receiver struct {
	// Secrets verify deliveries; required.
	Secrets *Secrets
	// Lowercase lower-cases the forge's repo name ("Acme/App" becomes
	// "acme/app"), for deployments whose hooks publish lower-case names.
	Lowercase bool
	// RepoPrefix is put before every repo name ("github.com/"); it must
	// make a valid repo name with the forge's name after it.
	RepoPrefix string
	// MaxBody bounds a body in bytes; DefaultMaxBody when 0.
	MaxBody int64
	// Now stamps the push time; time.Now when nil.
	Now func() time.Time
}

// Receive reads one delivery for forge f from its headers and body. The
// signature (or token) is checked before the body is parsed; the body is
// read once, through the HMACs of the configured secrets, into one buffer
// of at most MaxBody bytes.
func (r *Receiver) Receive(f Forge, h http.Header, body io.Reader) (*Delivery, error) {
	if r.Secrets == nil || len(r.Secrets.entries) == 0 {
		return nil, fmt.Errorf("%w: no webhook secret configured", ErrUnauthorized)
	}
	sig, err := signatureOf(f, h)
	if err != nil {
		return nil, err
	}
	limit := r.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	var macs []hash.Hash
	var w io.Writer = io.Discard
	if sig.hmac != nil {
		macs = make([]hash.Hash, len(r.Secrets.entries))
		ws := make([]io.Writer, len(macs))
		for i, e := range r.Secrets.entries {
			macs[i] = hmac.New(sha256.New, e.secret)
			ws[i] = macs[i]
		}
		w = io.MultiWriter(ws...)
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.TeeReader(io.LimitReader(body, limit+1), w))
	if err != nil {
		return nil, fmt.Errorf("%w: read body: %v", ErrMalformed, err)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: body larger than %d bytes", ErrTooLarge, limit)
	}
	var matched []*secretEntry
	for i := range r.Secrets.entries {
		e := &r.Secrets.entries[i]
		var ok bool
		if sig.hmac != nil {
			ok = hmac.Equal(macs[i].Sum(nil), sig.hmac)
		} else {
			// Compare digests so the time taken says nothing about the
			// secret's length either.
			a, b := sha256.Sum256(sig.token), sha256.Sum256(e.secret)
			ok = subtle.ConstantTimeCompare(a[:], b[:]) == 1
		}
		if ok {
			matched = append(matched, e)
		}
	}
	if len(matched) == 0 {
		return nil, fmt.Errorf("%w: %s does not match any configured secret", ErrUnauthorized, sig.header)
	}
	if err := checkContentType(h.Get("Content-Type")); err != nil {
		return nil, err
	}
	d, err := translate(f, h, buf.Bytes(), r.naming(), r.now())
	if err != nil || d.Push == nil {
		return d, err
	}
	allowed := false
	for _, e := range matched {
		if e.repos.Match(d.Push.Repo) {
			allowed = true
			break
		}
	}
	if !allowed {
		return nil, fmt.Errorf("%w: the secret that signed this delivery is not configured for repo %q", ErrUnauthorized, d.Push.Repo)
	}
	return d, nil
}

func (r *Receiver) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

func (r *Receiver) naming() Naming { return Naming{Lowercase: r.Lowercase, Prefix: r.RepoPrefix} }

// Naming turns a forge's repo name into a refcast repo name.
type Naming struct {
	Lowercase bool
	Prefix    string
}

// repo applies the naming and validates the result; field names the
// payload field the name came from, for the error.
func (n Naming) repo(name, field string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: %s is missing", ErrUnacceptable, field)
	}
	if n.Lowercase {
		name = strings.ToLower(name)
	}
	name = n.Prefix + name
	if err := bus.ValidateRepo(name); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrUnacceptable, field, err)
	}
	return name, nil
}

// signature is what a delivery presents: an HMAC-SHA256 of the body, or a
// token (GitLab).
type signature struct {
	header string // where it came from, for messages
	hmac   []byte
	token  []byte
}

func signatureOf(f Forge, h http.Header) (signature, error) {
	switch f {
	case GitLab:
		const name = "X-Gitlab-Token"
		t := h.Get(name)
		if t == "" {
			return signature{}, fmt.Errorf("%w: missing %s header", ErrUnauthorized, name)
		}
		return signature{header: name, token: []byte(t)}, nil
	case GitHub:
		return hmacHeader(h, "X-Hub-Signature-256", "sha256=")
	case Gitea:
		// Gitea sends the bare hex digest; it also sends GitHub's header.
		if h.Get("X-Gitea-Signature") != "" {
			return hmacHeader(h, "X-Gitea-Signature", "")
		}
		return hmacHeader(h, "X-Hub-Signature-256", "sha256=")
	case Bitbucket:
		return hmacHeader(h, "X-Hub-Signature", "sha256=")
	}
	return signature{}, fmt.Errorf("%w: unknown forge %q", ErrMalformed, f)
}

func hmacHeader(h http.Header, name, prefix string) (signature, error) {
	v := h.Get(name)
	if v == "" {
		return signature{}, fmt.Errorf("%w: missing %s header", ErrUnauthorized, name)
	}
	hexSig, ok := strings.CutPrefix(v, prefix)
	sum, err := hex.DecodeString(hexSig)
	if !ok || err != nil || len(sum) != sha256.Size {
		return signature{}, fmt.Errorf("%w: %s must be %s followed by 64 hex digits (HMAC-SHA256)", ErrUnauthorized, name, prefix)
	}
	return signature{header: name, hmac: sum}, nil
}

// checkContentType accepts application/json (with parameters) and a
// missing type; GitHub's form encoding is refused with what to change.
func checkContentType(ct string) error {
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/json" {
		return nil
	}
	return fmt.Errorf("%w: Content-Type %q: set the webhook's content type to application/json", ErrContentType, bus.Clip(ct, 80))
}

// translate dispatches to the forge's translator; on error it returns no
// delivery.
func translate(f Forge, h http.Header, body []byte, n Naming, now time.Time) (*Delivery, error) {
	d, err := translateFor(f, h, body, n, now)
	if err != nil {
		return nil, err
	}
	return d, nil
}

func translateFor(f Forge, h http.Header, body []byte, n Naming, now time.Time) (*Delivery, error) {
	switch f {
	case GitHub:
		return translateGitHub(h, body, n, now)
	case GitLab:
		return translateGitLab(h, body, n, now)
	case Gitea:
		return translateGitea(h, body, n, now)
	case Bitbucket:
		return translateBitbucket(h, body, n, now)
	}
	return nil, fmt.Errorf("%w: unknown forge %q", ErrMalformed, f)
}
