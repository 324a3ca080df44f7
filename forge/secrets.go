package forge

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/refcast/refcast/bus"
)

// Limits on a secret file.
const (
	// MinSecretLen is the shortest secret accepted: 16 bytes of a random
	// token (what `openssl rand -hex 8` prints) are out of reach of online
	// guessing behind the publish rate limit.
	MinSecretLen = 16
	// MaxSecretLen bounds a line; GitHub and GitLab accept longer, but
	// nobody types more.
	MaxSecretLen = 1024
	// MaxSecrets bounds the entries: every HMAC delivery is hashed once per
	// entry while it is read, so 64 entries cost a 25 MB body about 64
	// SHA-256 passes (roughly a second of one core), which the per-client
	// rate limit then bounds.
	MaxSecrets = 64
)

// Secrets are the webhook secrets of a node: one for every repo, or one per
// repo glob so each organisation has its own.
type Secrets struct {
	entries []secretEntry // set at parse, read-only after
}

type secretEntry struct {
	repos  bus.RepoPattern // matched against the refcast repo name
	secret []byte
}

// Len is the number of secrets.
func (s *Secrets) Len() int { return len(s.entries) }

// ParseSecrets reads a secret file: blank lines and lines starting with '#'
// are skipped; every other line is either SECRET, for every repo, or
// REPO_GLOB SECRET (glob as in subscriptions, matched against the refcast
// repo name after --webhook-lowercase and --webhook-repo-prefix). Errors
// name the line.
func ParseSecrets(r io.Reader) (*Secrets, error) {
	s := &Secrets{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 2*MaxSecretLen+2*bus.MaxRepoLen)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		glob, secret := "**", ""
		switch len(fields) {
		case 1:
			secret = fields[0]
		case 2:
			glob, secret = fields[0], fields[1]
		default:
			return nil, fmt.Errorf("line %d: want SECRET or REPO_GLOB SECRET, found %d fields", line, len(fields))
		}
		p, err := bus.ParseRepoPattern(glob)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if len(secret) < MinSecretLen || len(secret) > MaxSecretLen {
			return nil, fmt.Errorf("line %d: secret is %d bytes, want %d to %d (generate one with: openssl rand -hex 32)", line, len(secret), MinSecretLen, MaxSecretLen)
		}
		if len(s.entries) == MaxSecrets {
			return nil, fmt.Errorf("line %d: more than %d secrets", line, MaxSecrets)
		}
		s.entries = append(s.entries, secretEntry{repos: p, secret: []byte(secret)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	if len(s.entries) == 0 {
		return nil, fmt.Errorf("no secret in the file (one line SECRET, or lines REPO_GLOB SECRET)")
	}
	return s, nil
}
