package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// keySet is one loaded JWKS, immutable once built.
type keySet struct {
	keys []jwk
}

// jwk is one usable verification key.
type jwk struct {
	kid string
	alg string // the JWT alg it verifies: RS256, ES256 or EdDSA
	key any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// find returns the keys for alg: the one with kid when kid is set, else
// every key of that algorithm.
func (ks *keySet) find(alg, kid string) []jwt.VerificationKey {
	var out []jwt.VerificationKey
	for _, k := range ks.keys {
		if k.alg == alg && (kid == "" || k.kid == kid) {
			out = append(out, k.key)
		}
	}
	return out
}

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// parseJWKS reads a JWK Set (RFC 7517), keeping the public keys refcast
// can verify with and skipping the others (encryption keys, other curves,
// other algorithms, short RSA keys); skipped lists why. A set with no
// usable key is an error.
func parseJWKS(data []byte) (ks *keySet, skipped []string, err error) {
	var doc struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Alg string `json:"alg"`
			Use string `json:"use"`
			Crv string `json:"crv"`
			N   string `json:"n"`
			E   string `json:"e"`
			X   string `json:"x"`
			Y   string `json:"y"`
			D   string `json:"d"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse JWKS: %w", err)
	}
	ks = &keySet{}
	for i, k := range doc.Keys {
		name := fmt.Sprintf("key %d (kid %q)", i, k.Kid)
		if k.Use != "" && k.Use != "sig" {
			skipped = append(skipped, name+": use is not sig")
			continue
		}
		if k.D != "" {
			// A private key in a public set is a leak at the issuer; refuse
			// to rely on a set published that carelessly.
			return nil, nil, fmt.Errorf("parse JWKS: %s holds a private key (\"d\"); publish only public keys", name)
		}
		var (
			key any
			alg string
			err error
		)
		switch k.Kty {
		case "RSA":
			alg = "RS256"
			key, err = rsaKey(k.N, k.E)
		case "EC":
			alg = "ES256"
			if k.Crv != "P-256" {
				err = fmt.Errorf("curve %q not supported (P-256 only)", k.Crv)
				break
			}
			key, err = ecKey(k.X, k.Y)
		case "OKP":
			alg = "EdDSA"
			if k.Crv != "Ed25519" {
				err = fmt.Errorf("curve %q not supported (Ed25519 only)", k.Crv)
				break
			}
			key, err = edKey(k.X)
		default:
			err = fmt.Errorf("kty %q not supported", k.Kty)
		}
		if err == nil && k.Alg != "" && k.Alg != alg && (alg != "EdDSA" || k.Alg != "Ed25519") {
			err = fmt.Errorf("alg %q not supported for kty %s (%s only)", k.Alg, k.Kty, alg)
		}
		if err != nil {
			skipped = append(skipped, name+": "+err.Error())
			continue
		}
		ks.keys = append(ks.keys, jwk{kid: k.Kid, alg: alg, key: key})
	}
	if len(ks.keys) == 0 {
		return nil, skipped, fmt.Errorf("parse JWKS: no usable signing key (RS256, ES256 or EdDSA) among %d: %s", len(doc.Keys), strings.Join(skipped, "; "))
	}
	return ks, skipped, nil
}

func b64(field, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("field %s is not base64url", field)
	}
	return b, nil
}

func rsaKey(n, e string) (*rsa.PublicKey, error) {
	nb, err := b64("n", n)
	if err != nil {
		return nil, err
	}
	eb, err := b64("e", e)
	if err != nil {
		return nil, err
	}
	if len(eb) > 4 {
		return nil, errors.New("exponent too large")
	}
	ev := int(new(big.Int).SetBytes(eb).Int64())
	if ev < 3 || ev%2 == 0 {
		return nil, errors.New("bad exponent")
	}
	k := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: ev}
	if k.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key of %d bits, at least %d required", k.N.BitLen(), minRSABits)
	}
	return k, nil
}

func ecKey(x, y string) (*ecdsa.PublicKey, error) {
	xb, err := b64("x", x)
	if err != nil {
		return nil, err
	}
	yb, err := b64("y", y)
	if err != nil {
		return nil, err
	}
	if len(xb) != 32 || len(yb) != 32 {
		return nil, errors.New("P-256 coordinates must be 32 bytes")
	}
	// ParseUncompressedPublicKey checks the point is on the curve.
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, xb...), yb...))
	if err != nil {
		return nil, fmt.Errorf("bad P-256 point: %w", err)
	}
	return k, nil
}

func edKey(x string) (ed25519.PublicKey, error) {
	xb, err := b64("x", x)
	if err != nil {
		return nil, err
	}
	if len(xb) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("Ed25519 key must be %d bytes", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(xb), nil
}

// loadJWKS reads and parses the JWKS from its file or URL.
func (a *Authorizer) loadJWKS(ctx context.Context) (*keySet, error) {
	var (
		data []byte
		err  error
	)
	if strings.HasPrefix(a.jwks, "https://") || strings.HasPrefix(a.jwks, "http://") {
		data, err = a.fetch(ctx)
	} else {
		data, err = readLimited(a.jwks)
	}
	if err != nil {
		return nil, err
	}
	ks, skipped, err := parseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.jwks, err)
	}
	for _, s := range skipped {
		a.log.Debug("auth: JWKS key skipped", "jwks", a.jwks, "reason", s)
	}
	return ks, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read JWKS: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read JWKS %s: %w", path, err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("read JWKS %s: larger than %d bytes", path, maxJWKSBytes)
	}
	return data, nil
}

func (a *Authorizer) fetch(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.jwks, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS %s: status %s", a.jwks, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: %w", a.jwks, err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("fetch JWKS %s: larger than %d bytes", a.jwks, maxJWKSBytes)
	}
	return data, nil
}

// Refresh re-reads the JWKS now (a SIGHUP handler may call it). On failure
// the keys in use stay and the error is returned. Without a JWKS it does
// nothing.
func (a *Authorizer) Refresh(ctx context.Context) error {
	if a.jwks == "" {
		return nil
	}
	ks, err := a.loadJWKS(ctx)
	if err != nil {
		return err
	}
	a.keys.Store(ks)
	return nil
}

// kickRefresh asks the refresher for an early refresh, without waiting:
// a token named a key id the set does not hold, perhaps a fresh rotation.
func (a *Authorizer) kickRefresh() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// refresher re-reads the JWKS every a.refresh, and early when kicked but
// never twice within MinJWKSRefresh. It keeps the old keys when a refresh
// fails. It runs until ctx ends; Close waits for it.
func (a *Authorizer) refresher(ctx context.Context) {
	defer a.wg.Done()
	t := time.NewTicker(a.refresh)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
			if time.Since(last) < MinJWKSRefresh {
				continue
			}
		}
		last = time.Now()
		if err := a.Refresh(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("auth: JWKS refresh failed; keeping the current keys", "jwks", a.jwks, "err", err)
		}
	}
}
