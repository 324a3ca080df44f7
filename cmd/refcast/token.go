package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/refcast/refcast/auth"
)

// tokenEnv maps each `refcast token` flag to its environment twin. The
// secret and the issuer/audience share serve's names, so one environment
// file configures both.
var tokenEnv = map[string]string{
	"secret-file": "REFCAST_AUTH_SECRET_FILE",
	"issuer":      "REFCAST_AUTH_ISSUER",
	"audience":    "REFCAST_AUTH_AUDIENCE",
	"read":        "REFCAST_TOKEN_READ",
	"publish":     "REFCAST_TOKEN_PUBLISH",
	"ttl":         "REFCAST_TOKEN_TTL",
	"sub":         "REFCAST_TOKEN_SUB",
}

// secretEnv holds the HS256 secret itself, for CI systems that hand
// secrets over in the environment. There is deliberately no flag for it:
// argv is visible to every user of the machine.
const secretEnv = "REFCAST_AUTH_SECRET"

// claimFlag is a repeatable flag whose every value is validated by parse
// as it is set, so a bad pattern is reported with the flag that carried it.
type claimFlag struct {
	vals  []string
	parse func(string) error
}

func (f *claimFlag) String() string { return strings.Join(f.vals, ",") }

// repeatable marks the environment twin as a comma-separated list.
func (f *claimFlag) repeatable() {}

func (f *claimFlag) Set(v string) error {
	if err := f.parse(v); err != nil {
		return err
	}
	f.vals = append(f.vals, v)
	return nil
}

const tokenSynopsis = `token --secret-file FILE [--read REPO_GLOB[:REF_PATTERN]]... [--publish REPO_GLOB]... [--ttl 1h] [--sub NAME]

Prints an HS256 access token on stdout. Repo globs: '*' within one segment, '**' any depth;
ref patterns as in git refspecs ('refs/heads/*' includes refs/heads/a/b).
Lists in the environment are comma-separated.`

// runToken mints an HS256 token: `refcast token --secret-file FILE --read
// 'REPO_GLOB[:REF_PATTERN]' --publish 'REPO_GLOB' --ttl 1h [--sub NAME]`.
func runToken(_ context.Context, args []string, env Env) error {
	var (
		secretFile, issuer, audience, sub string
		ttl                               time.Duration
		read                              = claimFlag{parse: func(s string) error { _, err := auth.ParseReadClaim(s); return err }}
		publish                           = claimFlag{parse: func(s string) error { _, err := auth.ParsePublishClaim(s); return err }}
	)
	fs := newFlagSet("token", tokenSynopsis, env)
	fs.envNames = tokenEnv
	fs.StringVar(&secretFile, "secret-file", "", "file holding the HS256 secret the nodes verify with (or the secret itself in "+secretEnv+")")
	fs.Var(&read, "read", "grant reading REPO_GLOB[:REF_PATTERN], all refs without a pattern (repeatable)")
	fs.Var(&publish, "publish", "grant publishing to repos matching REPO_GLOB (repeatable)")
	fs.DurationVar(&ttl, "ttl", time.Hour, "lifetime of the token; streams opened with it end when it expires")
	fs.StringVar(&sub, "sub", "", "subject: who the token is for, shown in the nodes' logs")
	fs.StringVar(&issuer, "issuer", "", "iss claim, for nodes that check it (serve --auth-issuer)")
	fs.StringVar(&audience, "audience", "", "aud claim, for nodes that check it (serve --auth-audience)")
	if err := parseFlags(fs, args, env); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// Not echoed: a stray argument may well be a secret.
		return usageError{msg: fmt.Sprintf("token: takes no arguments, got %d (secrets go in a file or %s, never on the command line)", fs.NArg(), secretEnv)}
	}
	if len(read.vals) == 0 && len(publish.vals) == 0 {
		return usageError{msg: "token: give at least one --read or --publish: a token that grants nothing is useless"}
	}
	if ttl <= 0 {
		return usageError{msg: fmt.Sprintf("token: --ttl must be positive, got %s: every token expires", ttl)}
	}

	var key []byte
	switch envSecret := env.Getenv(secretEnv); {
	case secretFile != "" && envSecret != "":
		return usageError{msg: fmt.Sprintf("token: both --secret-file and %s are set; use one", secretEnv)}
	case secretFile != "":
		b, err := auth.ReadSecretFile(secretFile)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		key = b
	case envSecret != "":
		key = []byte(strings.TrimSpace(envSecret))
	default:
		return usageError{msg: fmt.Sprintf("token: --secret-file (or %s, or %s) is required", tokenEnv["secret-file"], secretEnv)}
	}

	c := auth.Claims{Read: read.vals, Publish: publish.vals}
	c.Subject, c.Issuer = sub, issuer
	if audience != "" {
		c.Audience = jwt.ClaimStrings{audience}
	}
	tok, err := auth.Mint(key, c, ttl, time.Now())
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(env.Stdout, tok)
	return err
}
