// Package auth decides who may read which refs and who may publish pushes,
// from signed JWT bearer tokens: HS256 with a shared secret file, or
// RS256/ES256/EdDSA with public keys from a JWKS (a file or a URL, re-read
// periodically). Repos can be declared public: readable without a token.
//
// It knows nothing about HTTP beyond TokenFromRequest and BearerToken, and
// nothing about streams: the server asks before it starts one, and ends it
// at Grant.Expires. It is not an identity provider: it verifies tokens and
// mints HS256 ones for `refcast token`, nothing more. See docs/security.md
// for the model and the claim format.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/refcast/refcast/bus"
)

// Defaults for Config.
const (
	// DefaultJWKSRefresh is how often the JWKS is re-read.
	DefaultJWKSRefresh = 5 * time.Minute
	// MinJWKSRefresh is the floor of Config.JWKSRefresh and the least time
	// between two refreshes triggered by tokens naming an unknown key id,
	// so forged kids cannot make a node hammer the key server.
	MinJWKSRefresh = 30 * time.Second
	// DefaultLeeway absorbs clock skew between the token's issuer and the
	// node when checking exp and nbf.
	DefaultLeeway = 30 * time.Second
	// DefaultFetchTimeout bounds one JWKS download.
	DefaultFetchTimeout = 10 * time.Second
)

// Limits on what a token may carry, so checking one stays cheap.
const (
	// MaxTokenLen is the longest token accepted; longer ones are refused
	// before any parsing.
	MaxTokenLen = 8 << 10
	// MaxClaims is the most read or publish patterns one token may hold.
	MaxClaims = 256
	// MinSecretLen is the shortest HS256 secret accepted (256 bits).
	MinSecretLen = 32
	// maxJWKSBytes bounds a JWKS document.
	maxJWKSBytes = 1 << 20
)

// Errors of AuthorizeRead and AuthorizePublish. Both come wrapped in an
// *Error whose Reason says, for the client, what was wrong or refused.
var (
	// ErrUnauthenticated means a token was required and is missing,
	// malformed, expired, not yet valid, signed with an unknown key or a
	// refused algorithm, or for another issuer or audience: HTTP 401.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the credential is valid but does not grant what
	// was asked: HTTP 403. The reason names the first refused repo and refs.
	ErrForbidden = errors.New("forbidden")
)

// Error is a refusal: Err is ErrUnauthenticated or ErrForbidden, Reason a
// message safe to show the client (it never contains the token).
type Error struct {
	Err    error
	Reason string
}

func (e *Error) Error() string { return e.Err.Error() + ": " + e.Reason }

// Unwrap returns ErrUnauthenticated or ErrForbidden.
func (e *Error) Unwrap() error { return e.Err }

func unauthenticated(format string, args ...any) error {
	return &Error{Err: ErrUnauthenticated, Reason: fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) error {
	return &Error{Err: ErrForbidden, Reason: fmt.Sprintf(format, args...)}
}

// Config configures an Authorizer. With neither SecretFile nor JWKS set,
// authorization is off (see Authorizer.Enabled).
type Config struct {
	// SecretFile holds the HS256 shared secret, surrounding whitespace
	// trimmed, at least MinSecretLen bytes. It is read once, by New.
	SecretFile string
	// JWKS is a file path or an http(s) URL of a JSON Web Key Set holding
	// RSA (RS256, 2048 bits or more), P-256 (ES256) or Ed25519 (EdDSA)
	// public keys.
	JWKS string
	// JWKSRefresh is how often JWKS is re-read (DefaultJWKSRefresh, at
	// least MinJWKSRefresh). A failed refresh keeps the keys in use.
	JWKSRefresh time.Duration
	// Public lists repo globs readable, all refs, without a token.
	Public []string
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	// Leeway is the allowed clock skew (DefaultLeeway).
	Leeway time.Duration
	// Now is the clock tokens are checked against (time.Now).
	Now func() time.Time
	// HTTPClient fetches a JWKS URL (a client with DefaultFetchTimeout).
	HTTPClient *http.Client
	// Logger reports JWKS refresh failures (slog.Default()).
	Logger *slog.Logger
}

// Grant is what a credential was found to allow.
type Grant struct {
	// Subject is the token's sub; empty for anonymous or public access.
	Subject string
	// Expires is when the credential stops being valid and a stream
	// opened with it must end; zero means never (anonymous or public).
	Expires time.Time
}

// Authorizer checks tokens against the configured keys and the claims
// against what a request asks. It is safe for concurrent use.
type Authorizer struct {
	// Set at construction.
	secret  []byte
	jwks    string
	public  []bus.RepoPattern
	methods []string // signing algorithms accepted
	opts    []jwt.ParserOption
	refresh time.Duration
	client  *http.Client
	log     *slog.Logger

	keys atomic.Pointer[keySet] // current JWKS keys; replaced by refreshes
	kick chan struct{}          // asks the refresher for an early refresh; buffer 1

	cancel    context.CancelFunc
	wg        sync.WaitGroup // the refresher goroutine
	closeOnce sync.Once
}

// New builds an Authorizer. It reads the secret file and loads the JWKS
// once, failing if either is unusable; then a goroutine re-reads the JWKS
// every JWKSRefresh until ctx is cancelled or Close is called.
func New(ctx context.Context, cfg Config) (*Authorizer, error) {
	a := &Authorizer{
		jwks:    cfg.JWKS,
		refresh: cfg.JWKSRefresh,
		client:  cfg.HTTPClient,
		log:     cfg.Logger,
		kick:    make(chan struct{}, 1),
	}
	if a.refresh == 0 {
		a.refresh = DefaultJWKSRefresh
	}
	a.refresh = max(a.refresh, MinJWKSRefresh)
	if a.client == nil {
		a.client = &http.Client{Timeout: DefaultFetchTimeout}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	for _, g := range cfg.Public {
		p, err := bus.ParseRepoPattern(g)
		if err != nil {
			return nil, fmt.Errorf("auth: public repos: %w", err)
		}
		a.public = append(a.public, p)
	}
	if cfg.SecretFile != "" {
		secret, err := ReadSecretFile(cfg.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		a.secret = secret
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	if cfg.JWKS != "" {
		ks, err := a.loadJWKS(ctx)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		a.keys.Store(ks)
		a.methods = append(a.methods, jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg())
		if strings.HasPrefix(cfg.JWKS, "http://") {
			a.log.Warn("auth: the JWKS is fetched over plain http; anyone on the path can substitute keys", "jwks", cfg.JWKS)
		}
	}

	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	a.opts = []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
	}
	if cfg.Issuer != "" {
		a.opts = append(a.opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		a.opts = append(a.opts, jwt.WithAudience(cfg.Audience))
	}

	ctx, a.cancel = context.WithCancel(ctx)
	if a.jwks != "" {
		a.wg.Add(1)
		go a.refresher(ctx)
	}
	return a, nil
}

// ReadSecretFile reads an HS256 secret: the file's content with surrounding
// whitespace trimmed, at least MinSecretLen bytes.
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret file: %w", err)
	}
	return checkSecret([]byte(strings.TrimSpace(string(b))), path)
}

func checkSecret(b []byte, from string) ([]byte, error) {
	if len(b) < MinSecretLen {
		return nil, fmt.Errorf("%s: secret is %d bytes, at least %d required (try: openssl rand -base64 48)", from, len(b), MinSecretLen)
	}
	return b, nil
}

// Close stops the JWKS refresher and waits for it. Safe to call twice; the
// Authorizer keeps answering with the keys it has.
func (a *Authorizer) Close() error {
	a.closeOnce.Do(func() {
		a.cancel()
		a.wg.Wait()
	})
	return nil
}

// Enabled reports whether tokens are checked. When false the node is
// anonymous: AuthorizeRead allows everything and AuthorizePublish refuses
// (publishing then relies on the server's shared publish token).
func (a *Authorizer) Enabled() bool { return a.secret != nil || a.jwks != "" }

// AuthorizeRead decides whether a subscription may be served. It is
// allowed without looking at the token when every repo pattern it names is
// covered by a public glob. Otherwise a valid token is required
// (ErrUnauthenticated), and every repo pattern of the filter must be
// covered, for every positive ref pattern (all refs when it has none), by a
// public glob or a read claim (ErrForbidden, naming the first refusal).
// Negative ref patterns only narrow a subscription and need no grant.
func (a *Authorizer) AuthorizeRead(token string, f *bus.Filter) (Grant, error) {
	if !a.Enabled() {
		return Grant{}, nil
	}
	if f == nil || len(f.Repos) == 0 {
		return Grant{}, forbidden("the subscription names no repo")
	}
	firstPrivate := -1
	for i, r := range f.Repos {
		if !a.isPublic(r) {
			firstPrivate = i
			break
		}
	}
	if firstPrivate < 0 {
		return Grant{}, nil
	}
	if token == "" {
		return Grant{}, unauthenticated("a token is required to read repo %q", f.Repos[firstPrivate].String())
	}
	c, pc, err := a.verify(token)
	if err != nil {
		return Grant{}, err
	}
	for _, r := range f.Repos[firstPrivate:] {
		if a.isPublic(r) {
			continue
		}
		if len(f.Include) == 0 {
			if !pc.coversAllRefs(r) {
				return Grant{}, forbidden("not allowed to read repo %q (all refs)", r.String())
			}
			continue
		}
		for _, ref := range f.Include {
			if !pc.coversRefs(r, ref) {
				return Grant{}, forbidden("not allowed to read repo %q refs %q", r.String(), ref.String())
			}
		}
	}
	return grantOf(c), nil
}

// AuthorizePublish decides whether the token may publish a push to repo,
// a repo name (not a glob) the caller has validated. Public globs grant
// nothing here.
func (a *Authorizer) AuthorizePublish(token string, repo string) (Grant, error) {
	if !a.Enabled() {
		return Grant{}, forbidden("token authorization is off on this node; publish with the shared publish token")
	}
	if token == "" {
		return Grant{}, unauthenticated("a token is required to publish")
	}
	c, pc, err := a.verify(token)
	if err != nil {
		return Grant{}, err
	}
	for _, p := range pc.publish {
		if p.Match(repo) {
			return grantOf(c), nil
		}
	}
	return Grant{}, forbidden("not allowed to publish to repo %q", repo)
}

// Subject is the sub of a token that verifies (signature, algorithm,
// expiry), "" otherwise: for log lines, which name who was denied without
// the token itself.
func (a *Authorizer) Subject(token string) string {
	if !a.Enabled() || token == "" {
		return ""
	}
	c, _, err := a.verify(token)
	if err != nil {
		return ""
	}
	return c.Subject
}

func grantOf(c *Claims) Grant {
	g := Grant{Subject: c.Subject}
	if c.ExpiresAt != nil {
		g.Expires = c.ExpiresAt.Time
	}
	return g
}

func (a *Authorizer) isPublic(r bus.RepoPattern) bool {
	for _, p := range a.public {
		if RepoCovers(p, r) {
			return true
		}
	}
	return false
}

// verify checks the token's signature, algorithm and registered claims,
// then parses its refcast claims.
func (a *Authorizer) verify(token string) (*Claims, *parsedClaims, error) {
	if len(token) > MaxTokenLen {
		return nil, nil, unauthenticated("token is longer than %d bytes", MaxTokenLen)
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, a.keyFor, a.opts...)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, nil, unauthenticated("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return nil, nil, unauthenticated("token not valid yet")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, nil, unauthenticated("token has no exp claim")
	default:
		return nil, nil, unauthenticated("invalid token: %v", err)
	}
	pc, err := parseClaims(&c)
	if err != nil {
		return nil, nil, unauthenticated("invalid token: %v", err)
	}
	return &c, pc, nil
}

// keyFor is the jwt.Keyfunc: HS256 gets only the shared secret, the
// asymmetric algorithms only JWKS keys of their own type, so an RSA public
// key can never serve as an HMAC secret.
func (a *Authorizer) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if alg == jwt.SigningMethodHS256.Alg() {
		if a.secret == nil {
			return nil, fmt.Errorf("algorithm %s is not accepted", alg)
		}
		return a.secret, nil
	}
	ks := a.keys.Load()
	if ks == nil {
		return nil, fmt.Errorf("algorithm %s is not accepted", alg)
	}
	kid, _ := t.Header["kid"].(string)
	keys := ks.find(alg, kid)
	switch len(keys) {
	case 0:
		if kid != "" {
			a.kickRefresh()
			return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
		}
		return nil, fmt.Errorf("no %s key", alg)
	case 1:
		return keys[0], nil
	}
	return jwt.VerificationKeySet{Keys: keys}, nil
}
