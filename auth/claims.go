package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/refcast/refcast/bus"
)

// Claims is a refcast token's payload: the registered claims (sub, exp,
// iat, iss, aud...) and two top-level lists.
//
//	{"sub":"ci-bot","exp":1767225600,
//	 "read":["acme/*:refs/heads/*","acme/docs","oss/**"],
//	 "publish":["acme/*"]}
//
// Each read entry is REPO_GLOB[:REF_PATTERN]: a repo glob as in a
// subscription ('*' within one segment, '**' a whole segment at any depth)
// and optionally a positive ref pattern ('*' crossing '/', as in git
// refspecs); without one it grants every ref. Each publish entry is a repo
// glob. A token with any malformed entry is refused as a whole.
type Claims struct {
	jwt.RegisteredClaims
	Read    []string `json:"read,omitempty"`
	Publish []string `json:"publish,omitempty"`
}

// ReadClaim is one parsed read entry.
type ReadClaim struct {
	Repo bus.RepoPattern
	// Ref limits the grant to the refs it matches; nil grants every ref.
	Ref *bus.RefPattern
}

// String returns the entry in its claim form.
func (c ReadClaim) String() string {
	if c.Ref == nil {
		return c.Repo.String()
	}
	return c.Repo.String() + ":" + c.Ref.String()
}

// ParseReadClaim parses REPO_GLOB[:REF_PATTERN]. Neither a repo glob nor a
// ref pattern can contain ':', so the first one splits them. The ref
// pattern must be positive: a claim grants, it cannot carve out.
func ParseReadClaim(s string) (ReadClaim, error) {
	repo, ref, hasRef := strings.Cut(s, ":")
	p, err := bus.ParseRepoPattern(repo)
	if err != nil {
		return ReadClaim{}, fmt.Errorf("read claim %q: %w", bus.Clip(s, 80), err)
	}
	c := ReadClaim{Repo: p}
	if hasRef {
		if strings.HasPrefix(ref, "^") {
			return ReadClaim{}, fmt.Errorf("read claim %q: %w: a claim's ref pattern cannot be negative", bus.Clip(s, 80), bus.ErrInvalid)
		}
		rp, err := bus.ParseRefPattern(ref)
		if err != nil {
			return ReadClaim{}, fmt.Errorf("read claim %q: %w", bus.Clip(s, 80), err)
		}
		c.Ref = &rp
	}
	return c, nil
}

// ParsePublishClaim parses a publish entry: a repo glob.
func ParsePublishClaim(s string) (bus.RepoPattern, error) {
	p, err := bus.ParseRepoPattern(s)
	if err != nil {
		return bus.RepoPattern{}, fmt.Errorf("publish claim %q: %w", bus.Clip(s, 80), err)
	}
	return p, nil
}

// parsedClaims is a verified token's grants.
type parsedClaims struct {
	read    []ReadClaim
	publish []bus.RepoPattern
}

func parseClaims(c *Claims) (*parsedClaims, error) {
	if len(c.Read) > MaxClaims || len(c.Publish) > MaxClaims {
		return nil, fmt.Errorf("%w: more than %d read or publish claims", bus.ErrInvalid, MaxClaims)
	}
	pc := &parsedClaims{}
	for _, s := range c.Read {
		rc, err := ParseReadClaim(s)
		if err != nil {
			return nil, err
		}
		pc.read = append(pc.read, rc)
	}
	for _, s := range c.Publish {
		p, err := ParsePublishClaim(s)
		if err != nil {
			return nil, err
		}
		pc.publish = append(pc.publish, p)
	}
	return pc, nil
}

// coversAllRefs reports whether one read claim grants every ref of every
// repo the subscription pattern r can match.
func (pc *parsedClaims) coversAllRefs(r bus.RepoPattern) bool {
	for _, c := range pc.read {
		if RepoCovers(c.Repo, r) && (c.Ref == nil || refCoversAll(*c.Ref)) {
			return true
		}
	}
	return false
}

// coversRefs reports whether one read claim grants every ref ref matches
// in every repo r matches.
func (pc *parsedClaims) coversRefs(r bus.RepoPattern, ref bus.RefPattern) bool {
	for _, c := range pc.read {
		if RepoCovers(c.Repo, r) && (c.Ref == nil || RefCovers(*c.Ref, ref)) {
			return true
		}
	}
	return false
}

// Mint signs an HS256 token with key (at least MinSecretLen bytes) holding
// c, issued at now and expiring ttl later; c's IssuedAt and ExpiresAt are
// overwritten. Every read and publish entry is validated first.
func Mint(key []byte, c Claims, ttl time.Duration, now time.Time) (string, error) {
	if _, err := checkSecret(key, "key"); err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	if ttl <= 0 {
		return "", errors.New("mint: ttl must be positive: every token expires")
	}
	if _, err := parseClaims(&c); err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	return s, nil
}
