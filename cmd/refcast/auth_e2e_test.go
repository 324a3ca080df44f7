package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/testnode"
)

// TestAuthEndToEnd runs a node with token authorization on and checks each
// endpoint against tokens minted by `refcast token`.
func TestAuthEndToEnd(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("s3cr3t-", 8)), 0o600); err != nil {
		t.Fatal(err)
	}
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--auth-secret-file", secret, "--public", "pub/*", "--drain", "100ms")
	mint := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"token", "--secret-file", secret}, args...)...).Output()
		if err != nil {
			t.Fatalf("refcast token %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	reader := mint("--read", "acme/*:refs/heads/*", "--ttl", "1h")
	publisher := mint("--publish", "acme/*", "--publish", "pub/*", "--ttl", "1h")
	short := mint("--read", "acme/*", "--ttl", "2s")

	get := func(path string, h http.Header) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, node.URL+path, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.Header.Get("Content-Type") == "text/event-stream" {
			return res.StatusCode, ""
		}
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	for _, tc := range []struct {
		name   string
		path   string
		header http.Header
		status int
		body   string
	}{
		{"public anonymous", "/v1/events?repo=pub/site", nil, 200, ""},
		{"private anonymous", "/v1/events?repo=acme/app", nil, 401, "error"},
		{"private snapshot anonymous", "/v1/refs?repo=acme/app", nil, 401, "error"},
		{"granted", "/v1/events?repo=acme/app&ref=refs/heads/*", bearer(reader), 200, ""},
		{"granted via query", "/v1/events?repo=acme/app&ref=refs/heads/main&access_token=" + reader, nil, 200, ""},
		{"granted via cookie", "/v1/refs?repo=acme/app&ref=refs/heads/*", http.Header{"Cookie": {"refcast_token=" + reader}}, 200, "cursor"},
		{"ref outside the claim", "/v1/events?repo=acme/app&ref=refs/tags/*", bearer(reader), 403, "acme/app"},
		{"all refs needs an all-refs claim", "/v1/events?repo=acme/app", bearer(reader), 403, "acme/app"},
		{"lookalike repo", "/v1/events?repo=acme-evil/x&ref=refs/heads/*", bearer(reader), 403, "acme-evil/x"},
		{"deeper repo", "/v1/events?repo=acme/x/y&ref=refs/heads/*", bearer(reader), 403, "acme/x/y"},
		{"mixed public and refused", "/v1/events?repo=pub/site&repo=other/x", nil, 401, "error"},
		{"garbage token", "/v1/events?repo=acme/app", bearer("not.a.token"), 401, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(tc.path, tc.header)
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("GET %s = %d %s, want %d containing %q", tc.path, status, body, tc.status, tc.body)
			}
			if status >= 400 && strings.Contains(body, "s3cr3t") {
				t.Fatalf("error leaks the secret: %s", body)
			}
		})
	}

	publish := func(repo string, h http.Header) int {
		t.Helper()
		p := bus.Push{ID: "p-" + strings.ReplaceAll(repo, "/", ".") + "-" + time.Now().Format("150405.000000000"), Repo: repo, Time: time.Now().UTC(),
			Updates: []bus.RefUpdate{{Ref: "refs/heads/main", Old: bus.ZeroSHA1, New: strings.Repeat("ab", 20)}}}
		b, _ := json.Marshal(p)
		req, _ := http.NewRequest(http.MethodPost, node.URL+"/v1/publish", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range h {
			req.Header[k] = v
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := publish("acme/app", bearer(publisher)); got != 200 {
		t.Errorf("publish with a publish claim = %d, want 200", got)
	}
	if got := publish("other/app", bearer(publisher)); got != 403 {
		t.Errorf("publish outside the claim = %d, want 403", got)
	}
	if got := publish("acme/app", bearer(reader)); got != 403 {
		t.Errorf("publish with a read-only token = %d, want 403", got)
	}
	if got := publish("acme/app", http.Header{"Cookie": {"refcast_token=" + publisher}}); got != 401 {
		t.Errorf("publish with only a cookie = %d, want 401 (cookies must not authorize publishing)", got)
	}

	// Token expiry ends the stream.
	s := testnode.Subscribe(t, node.URL+"/v1/events?repo=acme/app&access_token="+short, nil)
	s.Next(t, 5*time.Second, "hello")
	f := s.Next(t, 10*time.Second, "error")
	if !strings.Contains(f.Data, "expired") {
		t.Fatalf("closing frame %+v", f)
	}
	select {
	case _, ok := <-s.Frames:
		if ok {
			t.Fatal("stream kept going after its token expired")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream not closed after its token expired")
	}
}
