//go:build !windows

package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWebhookSecretFile: a malformed secret file stops `refcast serve` at
// start with a message naming the file's line; the environment variable
// works as the flag.
func TestWebhookSecretFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, file, args, want string }{
		{"short secret", "acme/* tooshort\n", "", "line 1: secret is 8 bytes, want 16"},
		{"three fields", "# orgs\nacme/* 0123456789abcdef extra\n", "", "line 2: want SECRET or REPO_GLOB SECRET"},
		{"bad glob", "acme/.hidden 0123456789abcdef\n", "", "line 1:"},
		{"empty", "\n# none\n", "", "no secret"},
		{"bad prefix", "0123456789abcdef\n", "--webhook-repo-prefix=/x", "--webhook-repo-prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "secrets")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"serve", "--listen", "127.0.0.1:0", "--data", t.TempDir()}
			if tc.args != "" {
				args = append(args, tc.args)
			}
			env, _, errb := wtEnv(map[string]string{"REFCAST_WEBHOOK_SECRET_FILE": path})
			if code := Run(context.Background(), args, env); code == 0 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want an error containing %q", code, errb.String(), tc.want)
			}
		})
	}
	env, _, errb := wtEnv(nil)
	if code := Run(context.Background(), []string{"serve", "--webhook-lowercase"}, env); code == 0 || !strings.Contains(errb.String(), "need --webhook-secret-file") {
		t.Fatalf("--webhook-lowercase alone: exit %d, %q", code, errb.String())
	}
}

// TestWebhookEndToEnd: a GitHub push delivered to /v1/hooks/github of a
// node started as an operator would (secret file, prefix, lower-casing)
// reaches `refcast watch`; its redelivery does not.
func TestWebhookEndToEnd(t *testing.T) {
	const secret = "e2e-webhook-secret-0123"
	path := filepath.Join(t.TempDir(), "secrets")
	if err := os.WriteFile(path, []byte("github.com/codertocat/* "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := wtNode(t, "--webhook-secret-file", path, "--webhook-lowercase", "--webhook-repo-prefix", "github.com/")
	w := startWatch(t, map[string]string{"REFCAST_JSON": "true"}, url, "--repo", "github.com/**")
	body, err := os.ReadFile("../../forge/testdata/github-push.json")
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	for range 2 { // a delivery and its redelivery
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/hooks/github", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("delivery: %d %s", resp.StatusCode, b)
		}
	}
	// A marker publish through /v1/publish: once watch prints it, the
	// redelivery would have been printed before it.
	wtPublish(t, url, "github.com/codertocat/marker", "refs/heads/main")
	wtEventually(t, func() bool { return strings.Count(w.out.String(), "\n") >= 2 }, "two lines from watch")
	w.stop()
	lines := strings.Split(strings.TrimSpace(w.out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("watch printed %d lines, want the delivery once and the marker:\n%s", len(lines), w.out.String())
	}
	var ev struct{ Repo, Ref, New, Source, Push string }
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Repo != "github.com/codertocat/hello-world" || ev.Ref != "refs/heads/main" || ev.Source != "github" ||
		ev.Push != "github:72d3162e-cc78-11e3-81ab-4c9367dc0958" || ev.New != "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c" {
		t.Fatalf("watch line %s", lines[0])
	}
}
