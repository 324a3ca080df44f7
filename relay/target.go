package relay

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// Defaults for Target.
const (
	// DefaultTimeout bounds one delivery attempt, response included. GitHub
	// gives receivers 10 s; a receiver slower than that is treated as down.
	DefaultTimeout = 10 * time.Second
	// DefaultBranch is the repository's default branch in the bodies of the
	// github and gitlab formats when the target does not name one: refcast
	// events do not carry HEAD.
	DefaultBranch = "main"
	// MinSecretLen is the shortest secret accepted: 16 bytes (128 bits) is
	// the least an HMAC key should carry against guessing.
	MinSecretLen = 16
)

// ErrShortSecret is returned for a secret shorter than MinSecretLen.
var ErrShortSecret = fmt.Errorf("secret shorter than %d bytes", MinSecretLen)

// Target is one webhook receiver. Fields are set before New and not
// changed afterwards.
type Target struct {
	// Name labels the target in metrics, logs, dead-letter files and
	// delivery ids; defaults to the URL's host and path. Renaming a target
	// changes its delivery ids.
	Name   string
	URL    string
	Format Format
	// Secret signs the body (github, generic-hmac, refcast), is the
	// X-Gitlab-Token (gitlab) or the notifyCommit token (jenkins).
	Secret []byte
	// Repos and Refs filter what the target gets (path.Match globs); none
	// means every repo or ref.
	Repos, Refs []string
	Timeout     time.Duration // per attempt; 0 is DefaultTimeout
	Header      http.Header   // extra request headers
	// RepoURL makes the repository URL receivers match against ({repo} is
	// replaced by the repo name); empty gives "refcast:{repo}".
	RepoURL       string
	DefaultBranch string
}

// CheckURL reports whether raw can be a target's URL: http or https, with
// a host.
func CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("target URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("target URL %q: scheme %q is not http or https", raw, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("target URL %q names no host", raw)
	}
	return u, nil
}

// check validates t and fills defaults.
func (t *Target) check() error {
	u, err := CheckURL(t.URL)
	if err != nil {
		return err
	}
	if t.Format == nil {
		return errors.New("target " + t.URL + ": no format")
	}
	if len(t.Secret) < MinSecretLen {
		return fmt.Errorf("target %s: %w (%d): write at least %d random bytes to the secret file, e.g. openssl rand -hex 32", t.URL, ErrShortSecret, len(t.Secret), MinSecretLen)
	}
	for _, p := range append(append([]string{}, t.Repos...), t.Refs...) {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("target %s: pattern %q: %w", t.URL, p, err)
		}
	}
	if t.Name == "" {
		t.Name = u.Host + strings.TrimSuffix(u.Path, "/")
	}
	if t.Timeout <= 0 {
		t.Timeout = DefaultTimeout
	}
	if t.DefaultBranch == "" {
		t.DefaultBranch = DefaultBranch
	}
	return nil
}

// matches reports whether t wants updates of repo and ref.
func (t *Target) matches(repo, ref string) bool {
	return anyMatch(t.Repos, repo) && (ref == "" || anyMatch(t.Refs, ref))
}

func anyMatch(pats []string, s string) bool {
	if len(pats) == 0 {
		return true
	}
	for _, p := range pats {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

// repoURL is the repository URL of repo for this target.
func (t *Target) repoURL(repo string) string {
	if t.RepoURL == "" {
		return "refcast:" + repo
	}
	return strings.ReplaceAll(t.RepoURL, "{repo}", repo)
}
