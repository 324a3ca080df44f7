package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/refcast/refcast/auth"
	"github.com/refcast/refcast/bus"
)

const tokenTestSecret = "token-test-secret-token-test-secret-0123"

// runTokenCmd runs `refcast token args...` in-process.
func runTokenCmd(t *testing.T, environ map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return environ[k] }}
	code = Run(context.Background(), append([]string{"token"}, args...), env)
	return code, out.String(), errb.String()
}

func tokenSecretFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(tokenTestSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func tokenAuthorizer(t *testing.T, secretFile string) *auth.Authorizer {
	t.Helper()
	a, err := auth.New(t.Context(), auth.Config{SecretFile: secretFile, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func TestTokenRoundTrip(t *testing.T) {
	secret := tokenSecretFile(t)
	a := tokenAuthorizer(t, secret)
	tests := []struct {
		name    string
		environ map[string]string
		args    []string
	}{
		{name: "flags", args: []string{"--secret-file", secret, "--read", "acme/*:refs/heads/*", "--read", "oss/**", "--publish", "acme/app", "--ttl", "2h", "--sub", "ci-bot"}},
		{name: "environment", environ: map[string]string{
			"REFCAST_AUTH_SECRET_FILE": secret,
			"REFCAST_TOKEN_READ":       "acme/*:refs/heads/*, oss/**",
			"REFCAST_TOKEN_PUBLISH":    "acme/app",
			"REFCAST_TOKEN_TTL":        "2h",
			"REFCAST_TOKEN_SUB":        "ci-bot",
		}},
		{name: "secret in the environment", environ: map[string]string{"REFCAST_AUTH_SECRET": tokenTestSecret},
			args: []string{"--read", "acme/*:refs/heads/*", "--read", "oss/**", "--publish", "acme/app", "--ttl", "2h", "--sub", "ci-bot"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runTokenCmd(t, tt.environ, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			tok := strings.TrimSuffix(stdout, "\n")
			if tok == "" || strings.ContainsAny(tok, " \n") {
				t.Fatalf("stdout = %q, want one token line", stdout)
			}
			read := func(repos []string, refs ...string) (auth.Grant, error) {
				f, err := bus.ParseFilter(repos, refs)
				if err != nil {
					t.Fatal(err)
				}
				return a.AuthorizeRead(tok, &f)
			}
			g, err := read([]string{"acme/web"}, "refs/heads/main")
			if err != nil {
				t.Fatal(err)
			}
			if g.Subject != "ci-bot" || time.Until(g.Expires) < 119*time.Minute || time.Until(g.Expires) > 121*time.Minute {
				t.Fatalf("grant = %+v, want ci-bot for 2h", g)
			}
			if _, err := read([]string{"oss/a/b"}); err != nil {
				t.Fatal(err)
			}
			if _, err := read([]string{"acme/web"}, "refs/tags/*"); err == nil {
				t.Fatal("tags of acme/web granted")
			}
			if _, err := a.AuthorizePublish(tok, "acme/app"); err != nil {
				t.Fatal(err)
			}
			if _, err := a.AuthorizePublish(tok, "acme/web"); err == nil {
				t.Fatal("publishing to acme/web granted")
			}
		})
	}
}

func TestTokenClaimsFormat(t *testing.T) {
	secret := tokenSecretFile(t)
	code, stdout, stderr := runTokenCmd(t, nil, "--secret-file", secret, "--read", "acme/app", "--issuer", "refcast-ops", "--audience", "refcast")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var c auth.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(strings.TrimSpace(stdout), &c); err != nil {
		t.Fatal(err)
	}
	if c.ExpiresAt == nil || c.IssuedAt == nil || c.ExpiresAt.Sub(c.IssuedAt.Time) != time.Hour {
		t.Errorf("exp/iat = %v/%v, want the default 1h ttl", c.ExpiresAt, c.IssuedAt)
	}
	if c.Issuer != "refcast-ops" || len(c.Audience) != 1 || c.Audience[0] != "refcast" || len(c.Read) != 1 || c.Publish != nil {
		t.Errorf("claims = %+v", c)
	}
}

func TestTokenMisuse(t *testing.T) {
	secret := tokenSecretFile(t)
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("tiny"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		environ  map[string]string
		args     []string
		code     int
		contains string
	}{
		{name: "bad repo glob", args: []string{"--secret-file", secret, "--read", "acme/**x"}, code: 2, contains: `--read: read claim "acme/**x": invalid: repo pattern "acme/**x": '**' must be a whole segment`},
		{name: "bad ref pattern", args: []string{"--secret-file", secret, "--read", "acme/app:heads/main"}, code: 2, contains: "must start with refs/"},
		{name: "negative ref pattern", args: []string{"--secret-file", secret, "--read", "acme/app:^refs/pull/*"}, code: 2, contains: "cannot be negative"},
		{name: "bad publish glob", args: []string{"--secret-file", secret, "--publish", "acme/app.git"}, code: 2, contains: `publish claim "acme/app.git"`},
		{name: "bad pattern from the environment", environ: map[string]string{"REFCAST_TOKEN_READ": "acme/app,acme//x"}, args: []string{"--secret-file", secret}, code: 2, contains: `REFCAST_TOKEN_READ (--read): read claim "acme//x"`},
		{name: "no grant", args: []string{"--secret-file", secret}, code: 2, contains: "at least one --read or --publish"},
		{name: "zero ttl", args: []string{"--secret-file", secret, "--read", "a/b", "--ttl", "0s"}, code: 2, contains: "--ttl must be positive"},
		{name: "bad ttl", args: []string{"--secret-file", secret, "--read", "a/b", "--ttl", "soon"}, code: 2, contains: `--ttl: "soon" is not a duration; use a number with a unit`},
		{name: "no secret", args: []string{"--read", "a/b"}, code: 2, contains: "--secret-file (or REFCAST_AUTH_SECRET_FILE, or REFCAST_AUTH_SECRET) is required"},
		{name: "two secrets", environ: map[string]string{"REFCAST_AUTH_SECRET": tokenTestSecret}, args: []string{"--secret-file", secret, "--read", "a/b"}, code: 2, contains: "use one"},
		{name: "secret on the command line", args: []string{"--read", "a/b", tokenTestSecret}, code: 2, contains: "never on the command line"},
		{name: "unknown flag", args: []string{"--secret", tokenTestSecret}, code: 2, contains: "unknown flag --secret; did you mean --secret-file?"},
		{name: "short secret", args: []string{"--secret-file", short, "--read", "a/b"}, code: 1, contains: "at least 32"},
		{name: "missing secret file", args: []string{"--secret-file", short + ".nope", "--read", "a/b"}, code: 1, contains: "read secret file"},
		{name: "help", args: []string{"-h"}, code: 0, contains: "REFCAST_TOKEN_READ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runTokenCmd(t, tt.environ, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			if tt.code != 0 && stdout != "" {
				t.Errorf("stdout = %q, want nothing on failure", stdout)
			}
			if !strings.Contains(stderr, tt.contains) {
				t.Fatalf("stderr = %q, want it to contain %q", stderr, tt.contains)
			}
			if strings.Contains(stderr, tokenTestSecret) {
				t.Fatal("the secret was printed")
			}
		})
	}
}
