package hook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// Publisher takes a push somewhere: a node over HTTP, a bus directly.
//
// Errors say what to do with the push: one wrapping bus.ErrInvalid means
// the push itself is wrong and retrying it is pointless (it is reported,
// not spooled); every other error is worth retrying (it is spooled).
// ErrUnauthorized is retryable too, because it is fixed by configuration,
// not by changing the push. Publishing a push ID twice must be harmless.
type Publisher interface {
	Publish(ctx context.Context, p *bus.Push) error
}

// ErrUnauthorized means the destination refused the credentials (HTTP 401
// or 403). The push is kept in the spool until the configuration is fixed.
var ErrUnauthorized = errors.New("not authorized: check REFCAST_TOKEN or git config refcast.token")

// Retryable reports whether a Publish error is worth retrying later.
func Retryable(err error) bool { return err != nil && !errors.Is(err, bus.ErrInvalid) }

// HTTPPublisher publishes to a node's POST /v1/publish. Safe for concurrent
// use. Its errors never contain the token, and the URL in them is redacted.
type HTTPPublisher struct {
	// URL is the node's base URL; "/v1/publish" is appended.
	URL string
	// Token is sent as "Authorization: Bearer <token>" when non-empty.
	Token string
	// Client defaults to a client without a timeout of its own: the
	// context passed to Publish bounds each call.
	Client *http.Client

	mu         sync.Mutex
	incomplete map[string]bool // repo -> the node's last answer said so (wire.GitStateIncomplete)
}

var _ Publisher = (*HTTPPublisher)(nil)

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 4 << 10

// Publish sends the push and maps the answer: 2xx is success; 400 and 413
// wrap bus.ErrInvalid; 401 and 403 wrap ErrUnauthorized; anything else,
// and a network failure, is retryable.
func (h *HTTPPublisher) Publish(ctx context.Context, p *bus.Push) error {
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode push: %w", err)
	}
	resp, endpoint, err := postPublish(ctx, h.Client, h.URL, h.Token, body)
	if err != nil {
		if endpoint.Host == "" { // the URL itself is wrong
			return err
		}
		return fmt.Errorf("publish to %s: %w", endpoint.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		h.record(p.Repo, resp)
		return nil
	}
	msg := errorMessage(resp)
	switch {
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusRequestEntityTooLarge:
		return fmt.Errorf("publish to %s: %w: node answered %d: %s", endpoint.Redacted(), bus.ErrInvalid, resp.StatusCode, msg)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("publish to %s: %w (node answered %d: %s)", endpoint.Redacted(), ErrUnauthorized, resp.StatusCode, msg)
	default:
		return fmt.Errorf("publish to %s: node answered %d: %s", endpoint.Redacted(), resp.StatusCode, msg)
	}
}

// record keeps what a successful publish's answer said of the repo's git
// state. An answer that does not parse (an older node) says nothing.
func (h *HTTPPublisher) record(repo string, resp *http.Response) {
	var pub wire.Published
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = json.Unmarshal(data, &pub)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.incomplete == nil {
		h.incomplete = map[string]bool{}
	}
	h.incomplete[repo] = pub.GitState == wire.GitStateIncomplete
}

// GitIncomplete implements gitStateAsker from the node's answer to the
// last publish of repo.
func (h *HTTPPublisher) GitIncomplete(_ context.Context, repo string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.incomplete[repo]
}

// postPublish POSTs body to base's publish endpoint with the token, on c
// (http.DefaultClient when nil). A transport error comes back without the
// unredacted URL that *url.Error repeats; endpoint is set whenever the URL
// parsed, for the caller's message.
func postPublish(ctx context.Context, c *http.Client, base, token string, body []byte) (resp *http.Response, endpoint *url.URL, err error) {
	endpoint, err = publishURL(base)
	if err != nil {
		return nil, &url.URL{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.String(), bytes.NewReader(body))
	if err != nil {
		return nil, endpoint, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set(wire.HeaderAuthorization, wire.Bearer(token))
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err = c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it repeats the URL unredacted
		}
		return nil, endpoint, err
	}
	return resp, endpoint, nil
}

func publishURL(base string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Not ErrInvalid: the push is fine, the configuration is not, and
		// the push must be kept until it is fixed.
		return nil, errors.New("node URL must be http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]")
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + wire.PathPublish
	u.RawPath = ""
	return u, nil
}

// errorMessage reads the node's JSON error ({"error": "..."}), or the
// status text, and drains a little of the body so the connection can be
// reused.
func errorMessage(resp *http.Response) string {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if resp.StatusCode < 300 {
		return ""
	}
	var e wire.Error
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return bus.Clip(strings.ToValidUTF8(e.Error, "?"), 80)
	}
	return http.StatusText(resp.StatusCode)
}

// BusPublisher publishes straight into a bus (the Redis bus from a hook,
// or a node's own bus when it drains a spool). Bus errors that wrap
// bus.ErrInvalid are final; the rest, ErrUnavailable included, are
// retryable.
type BusPublisher struct {
	Bus interface {
		Publish(ctx context.Context, p *bus.Push) ([]bus.Event, error)
	}
}

var _ Publisher = BusPublisher{}

// Publish implements Publisher.
func (b BusPublisher) Publish(ctx context.Context, p *bus.Push) error {
	_, err := b.Bus.Publish(ctx, p)
	return err
}

// GitIncomplete implements gitStateAsker by asking the bus, when it can
// tell (one HMGET on Redis); a failed read says complete, so the push is
// not held for it.
func (b BusPublisher) GitIncomplete(ctx context.Context, repo string) bool {
	gc, ok := b.Bus.(interface {
		GitComplete(ctx context.Context, repo string) (bool, error)
	})
	if !ok {
		return false
	}
	complete, err := gc.GitComplete(ctx, repo)
	return err == nil && !complete
}
