package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/refcast/refcast/bus"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultCheckTimeout bounds one destination check: long enough for a
// node across the world and a TLS handshake (a few round trips of 300 ms),
// short enough for an operator waiting at a prompt.
const DefaultCheckTimeout = 5 * time.Second

// ValidateNodeURL checks that a node URL can be published to: http or
// https, with a host. It is what the hook needs, not a reachability test.
func ValidateNodeURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("node URL %q must be http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH], e.g. http://127.0.0.1:8080", redactURL(s))
	}
	return nil
}

// validateRedisURL checks the scheme only; the full form (seed lists,
// Sentinel, TLS options) is the bus's to parse when it opens.
func validateRedisURL(s string) error {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || !strings.HasPrefix(scheme, "redis") {
		return fmt.Errorf("redis URL %q must start with redis://, rediss://, redis-sentinel:// or redis-cluster://, e.g. redis://127.0.0.1:6379", redactURL(s))
	}
	return nil
}

// ValidateToken checks a publish token can travel in an Authorization
// header: non-empty, printable ASCII, no spaces. A token copied with its
// file's trailing newline is the usual culprit.
func ValidateToken(tok string) error {
	if tok == "" {
		return errors.New("the publish token (REFCAST_TOKEN or git config refcast.token) is set but empty: set it to the node's --publish-token or a token from 'refcast token --publish'")
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("the publish token (REFCAST_TOKEN or git config refcast.token) has a space, control or non-ASCII byte at offset %d: set it again without it (a trailing newline from the token file?)", i)
		}
	}
	return nil
}

// redactURL drops a password from a URL for an error message. What does
// not parse as a URL with user info but holds an '@' loses everything
// before it: a malformed URL may still carry a password.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return "..." + bus.Clip(s[i:], 80)
	}
	return bus.Clip(s, 80)
}

// validateFor checks the resolved settings a hook run will use: one
// destination, in a usable form, and a token fit for a header. cmd names
// the command in the messages.
func (s *Settings) validateFor(cmd string, cfg Config) error {
	switch {
	case s.URL == "" && s.Redis == "":
		return usagef("%s: no destination: give --url http://HOST:PORT (a node) or --redis redis://HOST:PORT (the Redis bus)", cmd)
	case s.URL != "":
		if err := ValidateNodeURL(s.URL); err != nil {
			return usagef("%s: --url: %v", cmd, err)
		}
	default:
		if err := validateRedisURL(s.Redis); err != nil {
			return usagef("%s: --redis: %v", cmd, err)
		}
	}
	// A key present with an empty value is a mistake; absent is not.
	if s.Token != "" || len(cfg["token"]) > 0 {
		if err := ValidateToken(s.Token); err != nil {
			return usagef("%s: %v", cmd, err)
		}
	}
	return nil
}

// Check proves the configured destination of the repository in the
// working directory answers and accepts the publish token, publishing
// nothing (refcast hook check). Outside a repository it checks what flags
// and environment say.
func (r *Runner) Check(ctx context.Context) error {
	s, repo, err := r.settingsHere(ctx, "hook check", true)
	if err != nil {
		return err
	}
	cfg := Config{}
	if repo != nil {
		if cfg, err = repo.Config(ctx); err != nil {
			return usagef("hook check: %v", err)
		}
	}
	if err := s.validateFor("hook check", cfg); err != nil {
		return err
	}
	return r.check(ctx, "hook check", s)
}

// check probes s's destination and says what it found on standard output.
// Its errors say what to fix.
func (r *Runner) check(ctx context.Context, cmd string, s Settings) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if s.URL != "" {
		if err := CheckNode(ctx, nil, s.URL, s.Token, s.RepoName); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		fmt.Fprintf(r.Stdout, "refcast %s: node %s answers and accepts the publish token for %s (nothing published)\n", cmd, redactURL(s.URL), s.RepoName)
		return nil
	}
	if r.OpenBus == nil {
		return usagef("%s: a Redis destination is configured but this build cannot open one", cmd)
	}
	p := &lazyBusPublisher{open: r.OpenBus, url: s.Redis, partitions: s.Partitions}
	defer p.close()
	if err := p.ping(ctx); err != nil {
		return fmt.Errorf("%s: Redis %s does not answer: %w (check the URL, its password and that Redis runs)", cmd, redactURL(s.Redis), err)
	}
	fmt.Fprintf(r.Stdout, "refcast %s: Redis %s answers (nothing published)\n", cmd, redactURL(s.Redis))
	return nil
}

// ErrNotANode means the URL answered, but not as a refcast node does.
var ErrNotANode = errors.New("not a refcast node")

// CheckNode proves a node answers at base and accepts token to publish to
// repo, without publishing: it posts a push that names repo and nothing
// else. A node checks the credential (for repo, with a JWT's publish
// claim) before the push, so 400 for the incomplete push means the token
// passed; 401 or 403 mean it did not (ErrUnauthorized). c may be nil.
func CheckNode(ctx context.Context, c *http.Client, base, token, repo string) error {
	body, err := json.Marshal(map[string]string{"repo": repo})
	if err != nil {
		return err
	}
	resp, endpoint, err := postPublish(ctx, c, base, token, body)
	if err != nil {
		if endpoint.Host == "" { // the URL itself is wrong
			return err
		}
		return fmt.Errorf("node %s does not answer: %w (is it running, and is the URL the one it listens on?)", endpoint.Redacted(), err)
	}
	defer resp.Body.Close()
	msg := errorMessage(resp)
	switch resp.StatusCode {
	case http.StatusBadRequest:
		return nil // past the credential check, stopped at the empty push
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("node %s: %w (node answered %d: %s)", endpoint.Redacted(), ErrUnauthorized, resp.StatusCode, msg)
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Errorf("%s answered %d to POST: %w (is the URL the node's base URL, without /v1/publish?)", endpoint.Redacted(), resp.StatusCode, ErrNotANode)
	case http.StatusTooManyRequests:
		return fmt.Errorf("node %s answered 429: publishing is rate limited right now; check again in a moment", endpoint.Redacted())
	}
	if resp.StatusCode < 300 {
		return fmt.Errorf("%s accepted a push with no id: %w", endpoint.Redacted(), ErrNotANode)
	}
	return fmt.Errorf("node %s answered %d: %s", endpoint.Redacted(), resp.StatusCode, msg)
}
