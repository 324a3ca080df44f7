package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/refcast/refcast/auth"
)

// runCmd runs `refcast args...` in-process with the given environment.
func runCmd(t *testing.T, environ map[string]string, args ...string) (code int, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return environ[k] }}
	code = Run(context.Background(), args, env)
	return code, errb.String()
}

// TestFlagErrors: every subcommand explains a bad flag in one line naming
// the flag, the value and the form wanted, then points at its -h.
func TestFlagErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		environ map[string]string
		args    []string
		want    string // the first line, after "refcast: "
		pointer string // the command the second line points at
	}{
		{name: "duration without a unit", args: []string{"serve", "--drain", "10"},
			want: `--drain: "10" is not a duration; use a number with a unit, like 10s or 500ms`, pointer: "serve"},
		{name: "duration with =", args: []string{"serve", "--heartbeat=often"},
			want: `--heartbeat: "often" is not a duration; use a number with a unit, like 10s or 500ms`, pointer: "serve"},
		{name: "int", args: []string{"serve", "--history", "many"},
			want: `--history: "many" is not a whole number; use digits, like 100`, pointer: "serve"},
		{name: "float", args: []string{"serve", "--publish-rate", "fast"},
			want: `--publish-rate: "fast" is not a number; use digits, like 2.5`, pointer: "serve"},
		{name: "missing value", args: []string{"serve", "--drain"},
			want: `--drain needs a value; use a number with a unit, like 10s or 500ms`, pointer: "serve"},
		{name: "missing string value", args: []string{"serve", "--listen"},
			want: `--listen needs a value; address to listen on, HOST:PORT`, pointer: "serve"},
		{name: "bad syntax", args: []string{"serve", "---drain", "1s"},
			want: `"---drain" is not a flag; write --name or --name=value`, pointer: "serve"},
		{name: "typo", args: []string{"serve", "--drian", "10s"},
			want: `serve: unknown flag --drian; did you mean --drain?`, pointer: "serve"},
		{name: "prefix", args: []string{"serve", "--auth-aud", "refcast"},
			want: `serve: unknown flag --auth-aud; did you mean --auth-audience?`, pointer: "serve"},
		{name: "single dash typo", args: []string{"serve", "-lisen", ":0"},
			want: `serve: unknown flag --lisen; did you mean --listen?`, pointer: "serve"},
		{name: "nothing near", args: []string{"serve", "--zzzzzz"},
			want: `serve: unknown flag --zzzzzz`, pointer: "serve"},
		{name: "env duration", environ: map[string]string{"REFCAST_DRAIN": "10"}, args: []string{"serve"},
			want: `REFCAST_DRAIN (--drain): "10" is not a duration; use a number with a unit, like 10s or 500ms`, pointer: "serve"},
		{name: "env int", environ: map[string]string{"REFCAST_MAX_CONNECTIONS": "lots"}, args: []string{"serve"},
			want: `REFCAST_MAX_CONNECTIONS (--max-connections): "lots" is not a whole number; use digits, like 100`, pointer: "serve"},
		{name: "bool", args: []string{"watch", "http://x", "--repo", "a", "--json=maybe"},
			want: `--json: "maybe" is not true or false; use true or false, as in --json=false`, pointer: "watch"},
		{name: "env bool", environ: map[string]string{"REFCAST_JSON": "yes"}, args: []string{"watch", "http://x", "--repo", "a"},
			want: `REFCAST_JSON (--json): "yes" is not true or false; use true or false, as in --json=false`, pointer: "watch"},
		{name: "watch int", args: []string{"watch", "http://x", "--repo", "a", "--retries", "3x"},
			want: `--retries: "3x" is not a whole number; use digits, like 100`, pointer: "watch"},
		{name: "watch typo after the URL", args: []string{"watch", "http://x", "--rpeo", "a"},
			want: `watch: unknown flag --rpeo; did you mean --repo?`, pointer: "watch"},
		{name: "install-hook typo", args: []string{"install-hook", "/nonexistent", "--urll", "http://x"},
			want: `install-hook: unknown flag --urll; did you mean --url?`, pointer: "install-hook"},
		{name: "install-hook env bool", environ: map[string]string{"REFCAST_UNINSTALL": "maybe"}, args: []string{"install-hook", "/nonexistent"},
			want: `REFCAST_UNINSTALL (--uninstall): "maybe" is not true or false; use true or false, as in --uninstall=false`, pointer: "install-hook"},
		{name: "install-hook no path", args: []string{"install-hook"},
			want: `install-hook: exactly one repository PATH is required, got 0 arguments (refcast install-hook PATH [flags])`, pointer: "install-hook"},
		{name: "hook duration", args: []string{"hook", "post-receive", "--timeout", "5"},
			want: `--timeout: "5" is not a duration; use a number with a unit, like 10s or 500ms`, pointer: "hook post-receive"},
		{name: "hook typo", args: []string{"hook", "flush", "--spol", "/tmp/x"},
			want: `hook flush: unknown flag --spol; did you mean --spool?`, pointer: "hook flush"},
		{name: "sync int", args: []string{"sync", "/nonexistent", "--partitions", "eight"},
			want: `--partitions: "eight" is not a whole number; use digits, like 100`, pointer: "sync"},
		{name: "token duration", args: []string{"token", "--ttl", "1"},
			want: `--ttl: "1" is not a duration; use a number with a unit, like 10s or 500ms`, pointer: "token"},
		{name: "token typo", args: []string{"token", "--audiance", "refcast"},
			want: `token: unknown flag --audiance; did you mean --audience?`, pointer: "token"},
		{name: "unknown git upstream feature", args: []string{"serve", "--git-upstream", "/srv/git/{repo}.git", "--git-upstream-feature", "filters"},
			want: `serve: --git-upstream-feature "filters": not a feature refcast knows; give one of filter, allow-tip-sha1-in-want, allow-reachable-sha1-in-want, ref-in-want, sideband-all, wait-for-done`, pointer: "serve"},
		{name: "git upstream feature without upstream", environ: map[string]string{"REFCAST_GIT_UPSTREAM_FEATURE": "filter"}, args: []string{"serve"},
			want: `serve: --git-upstream-feature needs --git-upstream: without an upstream refcast serves no fetch to advertise it for`, pointer: "serve"},
		{name: "token env twin shared with serve", environ: map[string]string{"REFCAST_TOKEN_TTL": "1"}, args: []string{"token"},
			want: `REFCAST_TOKEN_TTL (--ttl): "1" is not a duration; use a number with a unit, like 10s or 500ms`, pointer: "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stderr := runCmd(t, tt.environ, tt.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("stderr has %d lines, want 2:\n%s", len(lines), stderr)
			}
			if want := "refcast: " + tt.want; lines[0] != want {
				t.Errorf("first line\n got %s\nwant %s", lines[0], want)
			}
			if want := "Run 'refcast " + tt.pointer + " -h' for its flags."; lines[1] != want {
				t.Errorf("second line\n got %s\nwant %s", lines[1], want)
			}
		})
	}
}

// TestFlagUsageHelp: -h still prints the whole help, and succeeds.
func TestFlagUsageHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"serve", []string{"serve", "-h"}, "--auth-audience (REFCAST_AUTH_AUDIENCE)"},
		{"serve long", []string{"serve", "--help"}, "--auth-issuer (REFCAST_AUTH_ISSUER)"},
		{"watch", []string{"watch", "-h"}, "--debounce (REFCAST_DEBOUNCE)"},
		{"token", []string{"token", "-h"}, "--audience (REFCAST_AUTH_AUDIENCE)"},
		{"install-hook", []string{"install-hook", "-h"}, "--uninstall     remove refcast's hook"},
		{"hook", []string{"hook", "post-receive", "-h"}, "REFCAST_ENRICH_BUDGET"},
		{"sync", []string{"sync", "-h"}, "Seeds the bus with the current refs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stderr := runCmd(t, nil, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") < 5 {
				t.Errorf("help lacks %q or is short:\n%s", tt.want, stderr)
			}
		})
	}
}

func TestFlagNearest(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	for _, n := range []string{"repo", "ref", "redis", "drain", "publish-token", "publish-rate", "public", "ttl"} {
		fs.String(n, "", "")
	}
	tests := []struct{ name, in, want string }{
		{"one edit", "rpeo", "repo"},
		{"one missing letter", "dran", "drain"},
		{"plural", "repos", "repo"},
		{"prefix picks the shortest", "pub", "public"},
		{"longer prefix", "publish-tok", "publish-token"},
		{"too short to guess", "x", ""},
		{"nothing near", "verbose", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nearestFlag(fs, tt.in); got != tt.want {
				t.Errorf("nearestFlag(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFlagLevenshtein(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "abc", 3}, {"abc", "", 3}, {"drain", "drain", 0},
		{"drian", "drain", 1}, {"rpeo", "repo", 1}, {"ab", "ba", 1}, {"kitten", "sitting", 3}, {"répo", "repo", 1},
	}
	for _, tt := range tests {
		if got := levenshtein(tt.a, tt.b); got != tt.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// FuzzFlagErrors: whatever the arguments, a flag error is two lines, the
// reason and the pointer, and the layer never panics.
func FuzzFlagErrors(f *testing.F) {
	for _, s := range []string{"--drain 10", "--drian", "---x", "--n", "--ok=maybe", "--rate=", "--list a --list", "-h", "a b --drain=1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		var errb bytes.Buffer
		env := Env{Stderr: &errb, Getenv: func(string) string { return "" }}
		fs := newFlagSet("fuzz", "fuzz [flags]", env)
		fs.Duration("drain", time.Second, "drain window")
		fs.Int("n", 1, "count")
		fs.Bool("ok", false, "switch")
		fs.Float64("rate", 1, "rate")
		var l listFlag
		fs.Var(&l, "list", "items")
		_, err := parseInterspersed(fs, strings.Fields(line), env)
		if e, ok := err.(exitError); ok && e.code == 2 {
			lines := strings.Split(strings.TrimSuffix(errb.String(), "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "refcast: ") || !strings.HasPrefix(lines[1], "Run 'refcast fuzz -h'") {
				t.Fatalf("args %q: stderr %q", line, errb.String())
			}
		}
	})
}

// TestServeAuthIssuerAudience: a node started with --auth-issuer and
// --auth-audience refuses tokens for another issuer or audience.
func TestServeAuthIssuerAudience(t *testing.T) {
	t.Parallel()
	secret := []byte(strings.Repeat("aud-test-", 5))
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	url := wtNode(t, "--auth-secret-file", secretFile, "--auth-issuer", "https://id.example.com", "--auth-audience", "refcast")
	mint := func(iss string, aud ...string) string {
		t.Helper()
		c := auth.Claims{Read: []string{"acme/*"}}
		c.Issuer = iss
		if len(aud) > 0 {
			c.Audience = jwt.ClaimStrings(aud)
		}
		tok, err := auth.Mint(secret, c, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"right issuer and audience", mint("https://id.example.com", "refcast"), http.StatusOK},
		{"one of several audiences", mint("https://id.example.com", "grafana", "refcast"), http.StatusOK},
		{"wrong audience", mint("https://id.example.com", "grafana"), http.StatusUnauthorized},
		{"no audience", mint("https://id.example.com"), http.StatusUnauthorized},
		{"wrong issuer", mint("https://evil.example.com", "refcast"), http.StatusUnauthorized},
		{"no issuer", mint("", "refcast"), http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, url+"/v1/refs?repo=acme/app", nil)
			req.Header.Set("Authorization", "Bearer "+tt.token)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.want {
				t.Errorf("GET /v1/refs = %d %s, want %d", res.StatusCode, body, tt.want)
			}
		})
	}
}
