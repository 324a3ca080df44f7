package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/refcast/refcast/bus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef-test")
	testNow    = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newAuth(t *testing.T, cfg Config) *Authorizer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testNow }
	}
	a, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func mint(t *testing.T, c Claims, ttl time.Duration, now time.Time) string {
	t.Helper()
	tok, err := Mint(testSecret, c, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sign signs arbitrary claims with any method and key, for hostile tokens.
func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.Claims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func filter(t *testing.T, repos []string, refs ...string) *bus.Filter {
	t.Helper()
	f, err := bus.ParseFilter(repos, refs)
	if err != nil {
		t.Fatal(err)
	}
	return &f
}

func wantErr(t *testing.T, err, kind error, contains string) {
	t.Helper()
	if kind == nil {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, kind) {
		t.Fatalf("err = %v, want %v", err, kind)
	}
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("err %T is not an *Error", err)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Fatalf("err = %q, want it to contain %q", err, contains)
	}
}

func TestAuthorizeRead(t *testing.T) {
	a := newAuth(t, Config{
		SecretFile: writeFile(t, "secret", append([]byte("  \n"), append(testSecret, '\n')...)),
		Public:     []string{"oss/**", "acme/docs"},
	})
	exp := testNow.Add(time.Hour)
	alice := mint(t, Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"},
		Read:             []string{"acme/*:refs/heads/*", "acme/app", "team/**:refs/tags/*", "solo/one:refs/heads/main"},
	}, time.Hour, testNow)
	expired := mint(t, Claims{Read: []string{"**"}}, time.Minute, testNow.Add(-2*time.Minute))
	withinLeeway := mint(t, Claims{Read: []string{"**"}}, time.Minute, testNow.Add(-time.Minute-10*time.Second))
	notYet := sign(t, jwt.SigningMethodHS256, testSecret, Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(exp), NotBefore: jwt.NewNumericDate(testNow.Add(time.Hour))},
		Read:             []string{"**"},
	}, "")
	noExp := sign(t, jwt.SigningMethodHS256, testSecret, Claims{Read: []string{"**"}}, "")
	otherSecret := sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(exp)}, Read: []string{"**"},
	}, "")
	algNone := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(exp)}, Read: []string{"**"},
	}, "")
	hs384 := sign(t, jwt.SigningMethodHS384, testSecret, Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(exp)}, Read: []string{"**"},
	}, "")
	// alice's header and signature with a payload that reads everything.
	parts := strings.Split(alice, ".")
	everything := strings.Split(mint(t, Claims{Read: []string{"**"}}, time.Hour, testNow), ".")
	tampered := parts[0] + "." + everything[1] + "." + parts[2]
	badClaim := sign(t, jwt.SigningMethodHS256, testSecret, Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(exp)}, Read: []string{"acme/[x]"},
	}, "")
	negClaim := sign(t, jwt.SigningMethodHS256, testSecret, Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(exp)}, Read: []string{"acme/app:^refs/heads/*"},
	}, "")

	tests := []struct {
		name     string
		token    string
		repos    []string
		refs     []string
		err      error
		contains string
		expires  time.Time
	}{
		{name: "public exact, anonymous", repos: []string{"acme/docs"}},
		{name: "public glob, anonymous", repos: []string{"oss/**"}},
		{name: "public deep repo, anonymous", repos: []string{"oss/a/b/c"}, refs: []string{"refs/tags/*"}},
		{name: "public, expired token ignored", token: expired, repos: []string{"oss/x"}},
		{name: "public, garbage token ignored", token: "garbage", repos: []string{"oss/x"}},
		{name: "private, anonymous", repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: `a token is required to read repo "acme/app"`},
		{name: "public and private, anonymous", repos: []string{"oss/x", "acme/app"}, err: ErrUnauthenticated, contains: `"acme/app"`},
		{name: "public prefix is not public", repos: []string{"acme/docs2"}, err: ErrUnauthenticated},
		{name: "everything, anonymous", repos: []string{"**"}, err: ErrUnauthenticated},
		{name: "exact claim, all refs", token: alice, repos: []string{"acme/app"}, expires: exp},
		{name: "exact claim, some refs", token: alice, repos: []string{"acme/app"}, refs: []string{"refs/tags/*", "refs/pull/*"}, expires: exp},
		{name: "glob claim, its refs", token: alice, repos: []string{"acme/x"}, refs: []string{"refs/heads/*"}, expires: exp},
		{name: "glob claim, narrower refs", token: alice, repos: []string{"acme/x"}, refs: []string{"refs/heads/release/*", "refs/heads/main"}, expires: exp},
		{name: "glob claim, same glob", token: alice, repos: []string{"acme/*"}, refs: []string{"refs/heads/main"}, expires: exp},
		{name: "glob claim, narrower glob", token: alice, repos: []string{"acme/app-*"}, refs: []string{"refs/heads/*"}, expires: exp},
		{name: "negative refs need no grant", token: alice, repos: []string{"acme/x"}, refs: []string{"refs/heads/*", "^refs/heads/wip/*"}, expires: exp},
		{name: "public and granted", token: alice, repos: []string{"oss/lib", "acme/app"}, expires: exp},
		{name: "deep claim", token: alice, repos: []string{"team/**"}, refs: []string{"refs/tags/v*"}, expires: exp},
		{name: "deep claim, one repo", token: alice, repos: []string{"team/a/b"}, refs: []string{"refs/tags/v1"}, expires: exp},
		{name: "claim gives refs, sub wants all", token: alice, repos: []string{"acme/x"}, err: ErrForbidden, contains: `not allowed to read repo "acme/x" (all refs)`},
		{name: "only negative refs means all", token: alice, repos: []string{"acme/x"}, refs: []string{"^refs/tags/*"}, err: ErrForbidden, contains: `(all refs)`},
		{name: "refs outside the claim", token: alice, repos: []string{"acme/x"}, refs: []string{"refs/heads/*", "refs/tags/*"}, err: ErrForbidden, contains: `not allowed to read repo "acme/x" refs "refs/tags/*"`},
		{name: "broader refs than the claim", token: alice, repos: []string{"solo/one"}, refs: []string{"refs/heads/*"}, err: ErrForbidden, contains: `refs "refs/heads/*"`},
		{name: "refs all under refs/heads", token: alice, repos: []string{"acme/x"}, refs: []string{"refs/*"}, err: ErrForbidden, contains: `refs "refs/*"`},
		{name: "deeper than the glob", token: alice, repos: []string{"acme/**"}, refs: []string{"refs/heads/*"}, err: ErrForbidden, contains: `repo "acme/**"`},
		{name: "nested repo", token: alice, repos: []string{"acme/x/y"}, refs: []string{"refs/heads/*"}, err: ErrForbidden, contains: `repo "acme/x/y"`},
		{name: "look-alike owner", token: alice, repos: []string{"acme-evil/x"}, refs: []string{"refs/heads/*"}, err: ErrForbidden, contains: `repo "acme-evil/x"`},
		{name: "star everything", token: alice, repos: []string{"*"}, refs: []string{"refs/heads/*"}, err: ErrForbidden, contains: `repo "*"`},
		{name: "another repo", token: alice, repos: []string{"acme/app", "other/x"}, err: ErrForbidden, contains: `repo "other/x"`},
		{name: "deep claim, wrong refs", token: alice, repos: []string{"team/**"}, refs: []string{"refs/heads/*"}, err: ErrForbidden, contains: `refs "refs/heads/*"`},
		{name: "expired", token: expired, repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "token expired"},
		{name: "expired within leeway", token: withinLeeway, repos: []string{"acme/app"}, expires: testNow.Add(-10 * time.Second)},
		{name: "not valid yet", token: notYet, repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "not valid yet"},
		{name: "no exp", token: noExp, repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "no exp"},
		{name: "wrong secret", token: otherSecret, repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "signature is invalid"},
		{name: "alg none", token: algNone, repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "invalid token"},
		{name: "alg HS384", token: hs384, repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "invalid token"},
		{name: "tampered payload", token: tampered, repos: []string{"other/x"}, err: ErrUnauthenticated, contains: "signature is invalid"},
		{name: "garbage", token: "not.a.jwt", repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "invalid token"},
		{name: "too long", token: strings.Repeat("a", MaxTokenLen+1), repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "longer than"},
		{name: "malformed claim", token: badClaim, repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: `read claim "acme/[x]"`},
		{name: "negative claim", token: negClaim, repos: []string{"acme/app"}, err: ErrUnauthenticated, contains: "cannot be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := a.AuthorizeRead(tt.token, filter(t, tt.repos, tt.refs...))
			wantErr(t, err, tt.err, tt.contains)
			if err != nil {
				if tt.token != "" && strings.Contains(err.Error(), tt.token) {
					t.Fatal("the error contains the token")
				}
				return
			}
			if !g.Expires.Equal(tt.expires) {
				t.Errorf("Expires = %v, want %v", g.Expires, tt.expires)
			}
			if tt.token == alice && g.Subject != "alice" {
				t.Errorf("Subject = %q", g.Subject)
			}
		})
	}
}

func TestAuthorizePublish(t *testing.T) {
	a := newAuth(t, Config{SecretFile: writeFile(t, "secret", testSecret), Public: []string{"**"}})
	hook := mint(t, Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "git-server"},
		Read:             []string{"**"},
		Publish:          []string{"acme/app", "hooks/*"},
	}, time.Hour, testNow)
	reader := mint(t, Claims{Read: []string{"**"}}, time.Hour, testNow)
	tests := []struct {
		name, token, repo string
		err               error
		contains          string
	}{
		{name: "exact", token: hook, repo: "acme/app"},
		{name: "glob", token: hook, repo: "hooks/x"},
		{name: "other repo", token: hook, repo: "acme/other", err: ErrForbidden, contains: `not allowed to publish to repo "acme/other"`},
		{name: "nested", token: hook, repo: "hooks/x/y", err: ErrForbidden, contains: `"hooks/x/y"`},
		{name: "look-alike", token: hook, repo: "hooks-evil/x", err: ErrForbidden},
		{name: "read is not publish", token: reader, repo: "acme/app", err: ErrForbidden},
		{name: "public is not publish", repo: "acme/app", err: ErrUnauthenticated, contains: "required to publish"},
		{name: "bad token", token: "x.y.z", repo: "acme/app", err: ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := a.AuthorizePublish(tt.token, tt.repo)
			wantErr(t, err, tt.err, tt.contains)
			if err == nil && (g.Subject != "git-server" || !g.Expires.Equal(testNow.Add(time.Hour))) {
				t.Errorf("grant = %+v", g)
			}
		})
	}
}

func TestDisabled(t *testing.T) {
	a := newAuth(t, Config{Public: []string{"oss/*"}})
	if a.Enabled() {
		t.Fatal("Enabled() with no key")
	}
	g, err := a.AuthorizeRead("", filter(t, []string{"**"}))
	if err != nil || g != (Grant{}) {
		t.Fatalf("read = %+v, %v", g, err)
	}
	_, err = a.AuthorizePublish(mint(t, Claims{Publish: []string{"**"}}, time.Hour, testNow), "acme/app")
	wantErr(t, err, ErrForbidden, "token authorization is off")
}

func TestIssuerAudience(t *testing.T) {
	a := newAuth(t, Config{SecretFile: writeFile(t, "secret", testSecret), Issuer: "https://idp.example", Audience: "refcast"})
	mk := func(iss string, aud ...string) string {
		return mint(t, Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: iss, Audience: aud}, Read: []string{"**"}}, time.Hour, testNow)
	}
	tests := []struct {
		name  string
		token string
		err   error
	}{
		{"both match", mk("https://idp.example", "refcast"), nil},
		{"one of several audiences", mk("https://idp.example", "other", "refcast"), nil},
		{"wrong issuer", mk("https://evil.example", "refcast"), ErrUnauthenticated},
		{"no issuer", mk("", "refcast"), ErrUnauthenticated},
		{"wrong audience", mk("https://idp.example", "other"), ErrUnauthenticated},
		{"no audience", mk("https://idp.example"), ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.AuthorizeRead(tt.token, filter(t, []string{"acme/app"}))
			wantErr(t, err, tt.err, "")
		})
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		contains string
	}{
		{"short secret", Config{SecretFile: writeFile(t, "s", []byte("short\n"))}, "at least 32"},
		{"missing secret", Config{SecretFile: filepath.Join(t.TempDir(), "nope")}, "read secret file"},
		{"bad public glob", Config{Public: []string{"acme/**x"}}, "public repos"},
		{"missing JWKS", Config{JWKS: filepath.Join(t.TempDir(), "nope")}, "read JWKS"},
		{"empty JWKS", Config{JWKS: writeFile(t, "jwks", []byte(`{"keys":[]}`))}, "no usable signing key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(t.Context(), tt.cfg)
			if err == nil {
				_ = a.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("err = %v, want %q", err, tt.contains)
			}
		})
	}
}

func TestMintRefuses(t *testing.T) {
	tests := []struct {
		name     string
		key      []byte
		c        Claims
		ttl      time.Duration
		contains string
	}{
		{"short key", []byte("short"), Claims{Read: []string{"a/b"}}, time.Hour, "at least 32"},
		{"no ttl", testSecret, Claims{Read: []string{"a/b"}}, 0, "ttl must be positive"},
		{"bad repo", testSecret, Claims{Read: []string{"a//b"}}, time.Hour, `read claim "a//b"`},
		{"bad ref", testSecret, Claims{Read: []string{"a/b:heads/main"}}, time.Hour, "must start with refs/"},
		{"bad publish", testSecret, Claims{Publish: []string{"a/b.git"}}, time.Hour, `publish claim "a/b.git"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Mint(tt.key, tt.c, tt.ttl, testNow)
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("err = %v, want %q", err, tt.contains)
			}
		})
	}
}

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		header string
		cookie string
		query  string
		want   string
	}{
		{name: "none"},
		{name: "bearer", header: "Bearer abc", want: "abc"},
		{name: "bearer lowercase", header: "bearer abc", want: "abc"},
		{name: "basic is not bearer", header: "Basic abc", cookie: "c", want: "c"},
		{name: "header before cookie", header: "Bearer h", cookie: "c", query: "q", want: "h"},
		{name: "cookie before query", cookie: "c", query: "q", want: "c"},
		{name: "query", query: "q", want: "q"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/events?repo=a/b&access_token="+tt.query, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if tt.cookie != "" {
				r.Header.Set("Cookie", CookieName+"="+tt.cookie)
			}
			if got := TokenFromRequest(r); got != tt.want {
				t.Fatalf("TokenFromRequest = %q, want %q", got, tt.want)
			}
		})
	}
}

// Keys for the asymmetric tests, generated once.
var (
	rsaKey1, rsaKey2 = mustRSA(), mustRSA()
	ecKey1           = mustEC()
	edPub, edPriv    = mustEd()
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEd() (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return pub, priv
}

func TestAlgorithmConfusion(t *testing.T) {
	jwks := writeFile(t, "jwks.json", jwksJSON(t, map[string]any{"rsa1": &rsaKey1.PublicKey}))
	pubDER, err := x509.MarshalPKIXPublicKey(&rsaKey1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	claims := Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(testNow.Add(time.Hour))}, Read: []string{"**"}}
	rs := sign(t, jwt.SigningMethodRS256, rsaKey1, claims, "rsa1")

	jwksOnly := newAuth(t, Config{JWKS: jwks})
	secretOnly := newAuth(t, Config{SecretFile: writeFile(t, "secret", testSecret)})
	both := newAuth(t, Config{JWKS: jwks, SecretFile: writeFile(t, "secret", testSecret)})
	tests := []struct {
		name  string
		a     *Authorizer
		token string
		err   error
	}{
		{"RS256 with JWKS", jwksOnly, rs, nil},
		{"RS256 with both", both, rs, nil},
		{"RS256 without JWKS", secretOnly, rs, ErrUnauthenticated},
		{"HS256 with the public key PEM as secret", jwksOnly, sign(t, jwt.SigningMethodHS256, pubPEM, claims, "rsa1"), ErrUnauthenticated},
		{"HS256 with the public key PEM, both configured", both, sign(t, jwt.SigningMethodHS256, pubPEM, claims, "rsa1"), ErrUnauthenticated},
		{"HS256 with the public key DER as secret", both, sign(t, jwt.SigningMethodHS256, pubDER, claims, ""), ErrUnauthenticated},
		{"HS256 with the modulus as secret", both, sign(t, jwt.SigningMethodHS256, rsaKey1.N.Bytes(), claims, "rsa1"), ErrUnauthenticated},
		{"HS256 with the secret, JWKS only", jwksOnly, sign(t, jwt.SigningMethodHS256, testSecret, claims, ""), ErrUnauthenticated},
		{"PS256 with the RSA key", both, sign(t, jwt.SigningMethodPS256, rsaKey1, claims, "rsa1"), ErrUnauthenticated},
		{"RS512 with the RSA key", both, sign(t, jwt.SigningMethodRS512, rsaKey1, claims, "rsa1"), ErrUnauthenticated},
		{"alg none", both, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims, ""), ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.a.AuthorizeRead(tt.token, filter(t, []string{"acme/app"}))
			wantErr(t, err, tt.err, "")
		})
	}
}

// TestSubject: the sub of a token that verifies, whatever it grants; ""
// for a token that does not (forged, expired, garbage) or no token.
func TestSubject(t *testing.T) {
	a := newAuth(t, Config{SecretFile: writeFile(t, "secret", testSecret)})
	good := mint(t, Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "reader-bot"}, Read: []string{"x/*"}}, time.Hour, testNow)
	expired := mint(t, Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "old"}}, time.Hour, testNow.Add(-3*time.Hour))
	forged, err := Mint([]byte("another-secret-of-32-bytes-or-more!!"), Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "mallory"}}, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	for tok, want := range map[string]string{good: "reader-bot", expired: "", forged: "", "x.y.z": "", "": ""} {
		if got := a.Subject(tok); got != want {
			t.Errorf("Subject(%.20s…) = %q, want %q", tok, got, want)
		}
	}
}
