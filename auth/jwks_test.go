package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwksJSON encodes public keys as a JWK Set, kid -> key.
func jwksJSON(t *testing.T, keys map[string]any) []byte {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	var out []map[string]string
	for kid, k := range keys {
		m := map[string]string{"kid": kid, "use": "sig"}
		switch k := k.(type) {
		case *rsa.PublicKey:
			m["kty"], m["alg"] = "RSA", "RS256"
			m["n"], m["e"] = enc(k.N.Bytes()), enc(big.NewInt(int64(k.E)).Bytes())
		case *ecdsa.PublicKey:
			b, err := k.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			m["kty"], m["crv"], m["alg"] = "EC", "P-256", "ES256"
			m["x"], m["y"] = enc(b[1:33]), enc(b[33:])
		case ed25519.PublicKey:
			m["kty"], m["crv"], m["alg"] = "OKP", "Ed25519", "EdDSA"
			m["x"] = enc(k)
		default:
			t.Fatalf("key type %T", k)
		}
		out = append(out, m)
	}
	b, err := json.Marshal(map[string]any{"keys": out})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readAll() Claims {
	return Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(testNow.Add(time.Hour))}, Read: []string{"**"}}
}

func TestJWKSFile(t *testing.T) {
	a := newAuth(t, Config{JWKS: writeFile(t, "jwks.json", jwksJSON(t, map[string]any{
		"rsa1": &rsaKey1.PublicKey, "ec1": &ecKey1.PublicKey, "ed1": edPub,
	}))})
	c := readAll()
	tests := []struct {
		name  string
		token string
		err   error
	}{
		{"RS256 by kid", sign(t, jwt.SigningMethodRS256, rsaKey1, c, "rsa1"), nil},
		{"RS256 without kid", sign(t, jwt.SigningMethodRS256, rsaKey1, c, ""), nil},
		{"ES256 by kid", sign(t, jwt.SigningMethodES256, ecKey1, c, "ec1"), nil},
		{"ES256 without kid", sign(t, jwt.SigningMethodES256, ecKey1, c, ""), nil},
		{"EdDSA by kid", sign(t, jwt.SigningMethodEdDSA, edPriv, c, "ed1"), nil},
		{"EdDSA without kid", sign(t, jwt.SigningMethodEdDSA, edPriv, c, ""), nil},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey1, c, "nope"), ErrUnauthenticated},
		{"kid of another key type", sign(t, jwt.SigningMethodRS256, rsaKey1, c, "ec1"), ErrUnauthenticated},
		{"key not in the set", sign(t, jwt.SigningMethodRS256, rsaKey2, c, ""), ErrUnauthenticated},
		{"key not in the set, borrowed kid", sign(t, jwt.SigningMethodRS256, rsaKey2, c, "rsa1"), ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.AuthorizeRead(tt.token, filter(t, []string{"acme/app"}))
			wantErr(t, err, tt.err, "")
		})
	}
}

func TestParseJWKS(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		doc      string
		keys     int
		contains string
	}{
		{name: "one of each", doc: string(jwksJSON(t, map[string]any{"r": &rsaKey1.PublicKey, "e": &ecKey1.PublicKey, "d": edPub})), keys: 3},
		{name: "not json", doc: "{", contains: "parse JWKS"},
		{name: "private key", doc: `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + base64.RawURLEncoding.EncodeToString(edPub) + `","d":"AAAA"}]}`, contains: "private key"},
		{name: "encryption key skipped", doc: `{"keys":[{"kty":"OKP","use":"enc","crv":"Ed25519","x":"` + base64.RawURLEncoding.EncodeToString(edPub) + `"}]}`, contains: "use is not sig"},
		{name: "other curve", doc: `{"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]}`, contains: `curve "P-384"`},
		{name: "point off the curve", doc: `{"keys":[{"kty":"EC","crv":"P-256","x":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 32)) + `","y":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 32)) + `"}]}`, contains: "bad P-256 point"},
		{name: "symmetric key", doc: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, contains: `kty "oct"`},
		{name: "alg mismatch", doc: `{"keys":[{"kty":"RSA","alg":"RS512","n":"` + base64.RawURLEncoding.EncodeToString(rsaKey1.N.Bytes()) + `","e":"AQAB"}]}`, contains: `alg "RS512"`},
		{name: "short RSA", doc: `{"keys":[{"kty":"RSA","n":"` + base64.RawURLEncoding.EncodeToString(small.N.Bytes()) + `","e":"AQAB"}]}`, contains: "at least 2048"},
		{name: "good and bad", doc: `{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"OKP","crv":"Ed25519","x":"` + base64.RawURLEncoding.EncodeToString(edPub) + `"}]}`, keys: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, _, err := parseJWKS([]byte(tt.doc))
			if tt.contains != "" {
				if err == nil || !strings.Contains(err.Error(), tt.contains) {
					t.Fatalf("err = %v, want %q", err, tt.contains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ks.keys) != tt.keys {
				t.Fatalf("%d keys, want %d", len(ks.keys), tt.keys)
			}
		})
	}
}

// TestJWKSURLRotation serves a JWKS over HTTP, rotates it, and checks the
// new key is accepted after a refresh while a failed refresh keeps the keys.
func TestJWKSURLRotation(t *testing.T) {
	var doc atomic.Pointer[[]byte]
	var fail atomic.Bool
	set := func(b []byte) { doc.Store(&b) }
	set(jwksJSON(t, map[string]any{"k1": &rsaKey1.PublicKey}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(*doc.Load())
	}))
	defer srv.Close()

	a := newAuth(t, Config{JWKS: srv.URL + "/jwks.json", HTTPClient: srv.Client()})
	tok1 := sign(t, jwt.SigningMethodRS256, rsaKey1, readAll(), "k1")
	tok2 := sign(t, jwt.SigningMethodRS256, rsaKey2, readAll(), "k2")
	read := func(tok string) error {
		_, err := a.AuthorizeRead(tok, filter(t, []string{"acme/app"}))
		return err
	}
	if err := read(tok1); err != nil {
		t.Fatalf("k1 before rotation: %v", err)
	}
	if err := read(tok2); err == nil {
		t.Fatal("k2 accepted before rotation")
	}

	set(jwksJSON(t, map[string]any{"k2": &rsaKey2.PublicKey}))
	if err := a.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := read(tok2); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
	if err := read(tok1); err == nil {
		t.Fatal("k1 accepted after it was rotated out")
	}

	fail.Store(true)
	if err := a.Refresh(t.Context()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Refresh of a failing server = %v", err)
	}
	if err := read(tok2); err != nil {
		t.Fatalf("k2 after a failed refresh: %v", err)
	}
}

// TestJWKSRefresher checks the background refresher in a synctest bubble:
// periodic re-reads, keeping keys when the file breaks, early refresh on an
// unknown kid (rate-limited), and Close waiting for the goroutine.
func TestJWKSRefresher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := writeFile(t, "jwks.json", jwksJSON(t, map[string]any{"k1": &rsaKey1.PublicKey}))
		write := func(b []byte) {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		a, err := New(t.Context(), Config{JWKS: path, JWKSRefresh: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		// Tokens are checked against the bubble's clock.
		c := Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(10 * time.Hour))}, Read: []string{"**"}}
		tok2 := sign(t, jwt.SigningMethodRS256, rsaKey2, c, "k2")
		tok3 := sign(t, jwt.SigningMethodEdDSA, edPriv, c, "k3")
		read := func(tok string) error {
			_, err := a.AuthorizeRead(tok, filter(t, []string{"acme/app"}))
			return err
		}

		// Periodic refresh picks up a rotation.
		write(jwksJSON(t, map[string]any{"k2": &rsaKey2.PublicKey}))
		time.Sleep(time.Hour + time.Second)
		synctest.Wait()
		if err := read(tok2); err != nil {
			t.Fatalf("k2 after a periodic refresh: %v", err)
		}

		// A broken file keeps the keys.
		write([]byte("{broken"))
		time.Sleep(time.Hour)
		synctest.Wait()
		if err := read(tok2); err != nil {
			t.Fatalf("k2 after a failed refresh: %v", err)
		}

		// An unknown kid triggers an early refresh...
		write(jwksJSON(t, map[string]any{"k3": edPub}))
		time.Sleep(MinJWKSRefresh)
		if err := read(tok3); err == nil {
			t.Fatal("k3 accepted before any refresh")
		}
		synctest.Wait()
		if err := read(tok3); err != nil {
			t.Fatalf("k3 after the early refresh: %v", err)
		}
		// ...but not twice within MinJWKSRefresh.
		write(jwksJSON(t, map[string]any{"k2": &rsaKey2.PublicKey}))
		if err := read(sign(t, jwt.SigningMethodRS256, rsaKey2, c, "k2")); err == nil {
			t.Fatal("k2 accepted without a refresh")
		}
		synctest.Wait()
		if err := read(tok3); err != nil {
			t.Fatalf("a second early refresh ran within MinJWKSRefresh: %v", err)
		}

		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the refresher is gone: nothing left in the bubble
	})
}
