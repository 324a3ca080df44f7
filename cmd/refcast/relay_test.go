package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ghhook "github.com/go-playground/webhooks/v6/github"
	"github.com/refcast/refcast/watch"
)

const relaySecretText = "relay-test-secret-0123456789"

func TestRelayBadInput(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	os.WriteFile(good, []byte(relaySecretText+"\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("targets:\n  - url: [http://x\n"), 0o600)
	unknownKey := filepath.Join(dir, "key.yaml")
	os.WriteFile(unknownKey, []byte("- url: http://x\n  format: github\n  secretfile: "+good+"\n"), 0o600)
	base := []string{"relay", "http://127.0.0.1:1", "--repo", "acme/app"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown format", []string{"--to", "http://x/hook", "--format", "bitbucket", "--secret-file", good}, nil, `unknown format "bitbucket"`},
		{"malformed yaml", []string{"--config", badYAML}, nil, badYAML},
		{"unknown yaml key", []string{"--config", unknownKey}, nil, "secretfile"},
		{"non-http scheme", []string{"--to", "ftp://x/hook", "--format", "github", "--secret-file", good}, nil, `scheme "ftp" is not http or https`},
		{"missing secret file", []string{"--to", "http://x/hook", "--format", "github", "--secret-file", filepath.Join(dir, "nope")}, nil, "secret file"},
		{"short secret", []string{"--to", "http://x/hook", "--format", "github", "--secret-file", short}, nil, "shorter than 16"},
		{"no secret", []string{"--to", "http://x/hook", "--format", "github"}, nil, "no secret"},
		{"short secret from env", []string{"--to", "http://x/hook", "--format", "github"}, map[string]string{"REFCAST_RELAY_SECRET": "short"}, "shorter than 16"},
		{"unreachable url", []string{"--to", "http://127.0.0.1:1/hook", "--format", "github", "--secret-file", good}, nil, "is unreachable"},
		{"unresolvable host", []string{"--to", "http://no-such-host.invalid/hook", "--format", "github", "--secret-file", good}, nil, "is unreachable"},
		{"no target", nil, nil, "--to URL"},
		{"bad env twin", nil, map[string]string{"REFCAST_RELAY_MAX_ATTEMPTS": "many"}, "REFCAST_RELAY_MAX_ATTEMPTS"},
		{"max attempts without dead letter", []string{"--to", "http://x/hook", "--format", "github", "--secret-file", good, "--max-attempts", "3"}, nil, "--dead-letter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, errb := wtEnv(tt.env)
			code := Run(context.Background(), append(append([]string{}, base...), tt.args...), env)
			if code == 0 {
				t.Fatalf("exit 0; stderr %s", errb.String())
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, errb.String())
			}
			if strings.Contains(errb.String(), relaySecretText) {
				t.Errorf("stderr shows the secret")
			}
		})
	}
}

// relayReceiver is a GitHub-style receiver that checks signatures and
// parses bodies with go-playground/webhooks (Argo CD's parser).
type relayReceiver struct {
	mu  sync.Mutex
	got []string // ref@after in arrival order
	ids map[string]int
}

func (rc *relayReceiver) count() int { rc.mu.Lock(); defer rc.mu.Unlock(); return len(rc.got) }

func newRelayReceiver(t *testing.T) (*relayReceiver, *httptest.Server) {
	hook, err := ghhook.New(ghhook.Options.Secret(relaySecretText))
	if err != nil {
		t.Fatal(err)
	}
	rc := &relayReceiver{ids: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pl, err := hook.Parse(r, ghhook.PushEvent)
		if err != nil {
			t.Errorf("parse: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		p := pl.(ghhook.PushPayload)
		if p.Repository.HTMLURL != "https://git.example.com/"+p.Repository.FullName {
			t.Errorf("html_url %q", p.Repository.HTMLURL)
		}
		rc.mu.Lock()
		rc.got = append(rc.got, p.Ref)
		rc.ids[r.Header.Get("X-GitHub-Delivery")]++
		rc.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return rc, srv
}

func TestRelayE2EGitHubStateAndMetrics(t *testing.T) {
	url := wtNode(t)
	rc, srv := newRelayReceiver(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte(relaySecretText+"\n"), 0o600)
	state := filepath.Join(dir, "state")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsAddr := ln.Addr().String()
	ln.Close()

	vars := map[string]string{
		"REFCAST_RELAY_TO": srv.URL, "REFCAST_RELAY_FORMAT": "github", "REFCAST_RELAY_SECRET_FILE": secret,
		"REFCAST_RELAY_REPO_URL": "https://git.example.com/{repo}", "REFCAST_RELAY_METRICS_LISTEN": metricsAddr,
	}
	// Flags from the environment twins, as a unit file would set them.
	start := func() func() int { return startRelay(t, vars, url, "--repo", "acme/*", "--state", state) }
	stop := start()
	wtPublish(t, url, "acme/app", "refs/heads/main", "refs/heads/dev", "refs/tags/v1")
	wtEventually(t, func() bool { return rc.count() == 3 }, "3 deliveries")
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body.Write(b)
	for _, want := range []string{`refcast_relay_deliveries_total{outcome="delivered",target=`, "refcast_relay_pending 0", "refcast_relay_lag_seconds"} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, body.String())
		}
	}
	wtEventually(t, func() bool { c, _ := watch.LoadState(state); return c != "" }, "state saved")
	if code := stop(); code != 0 {
		t.Fatalf("relay exit %d", code)
	}

	// Published while the relay is down: delivered after the restart, and
	// nothing delivered twice.
	wtPublish(t, url, "acme/app", "refs/heads/main")
	stop = start()
	wtEventually(t, func() bool { return rc.count() == 4 }, "4th delivery")
	stop()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if got := strings.Join(rc.got, " "); got != "refs/heads/main refs/heads/dev refs/tags/v1 refs/heads/main" {
		t.Errorf("deliveries %s", got)
	}
	for id, n := range rc.ids {
		if n != 1 {
			t.Errorf("delivery %s received %d times", id, n)
		}
	}
}

// FuzzParseRelayConfig: any bytes give targets or an error, never a panic,
// and never an empty list without an error.
func FuzzParseRelayConfig(f *testing.F) {
	f.Add([]byte("targets:\n  - url: http://x\n    format: github\n    secret_file: /s\n"))
	f.Add([]byte("- url: http://x\n  timeout: 10s\n  headers: {A: b}\n"))
	f.Add([]byte("targets: [\n"))
	f.Add([]byte("42"))
	f.Fuzz(func(t *testing.T, b []byte) {
		list, err := parseRelayConfig(b)
		if err == nil && len(list) == 0 {
			t.Fatal("no targets and no error")
		}
	})
}

// startRelay runs `refcast relay` until the returned stop is called, which
// returns the exit code.
func startRelay(t *testing.T, vars map[string]string, args ...string) func() int {
	t.Helper()
	env, _, errb := wtEnv(vars)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Run(ctx, append([]string{"relay"}, args...), env) }()
	wtEventually(t, func() bool { return strings.Contains(errb.String(), "connected") }, "relay connected: "+errb.String())
	var once sync.Once
	code := -1
	stop := func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(15 * time.Second):
				t.Error("relay did not stop")
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestRelayE2EReset: the node's history no longer holds what the relay
// missed while down; the reset is delivered as one webhook per ref of the
// snapshot that differs from what the relay delivered before the restart
// (kept in --state), marked reset. A state file of an older relay (a
// cursor only) still loads, and then every ref of the snapshot is sent.
func TestRelayE2EReset(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cursorOnly bool
		want       int // reset deliveries
	}{
		{"refs kept", false, 10},
		{"cursor-only state", true, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := wtNode(t, "--history", "3", "--partitions", "1")
			var mu sync.Mutex
			var got []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var e struct {
					Ref string
				}
				b, _ := io.ReadAll(r.Body)
				_ = json.Unmarshal(b, &e)
				mu.Lock()
				got = append(got, e.Ref+" "+r.Header.Get("X-Refcast-Reset"))
				mu.Unlock()
			}))
			defer srv.Close()
			dir := t.TempDir()
			secret := filepath.Join(dir, "secret")
			os.WriteFile(secret, []byte(relaySecretText), 0o600)
			state := filepath.Join(dir, "state")
			args := []string{url, "--repo", "acme/app", "--state", state, "--to", srv.URL, "--format", "refcast", "--secret-file", secret}
			n := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }

			stop := startRelay(t, nil, args...)
			wtPublish(t, url, "acme/app", "refs/heads/main")
			wtEventually(t, func() bool { return n() == 1 }, "first delivery")
			stop()
			if st, err := watch.ReadState(state); err != nil || len(st.Refs["acme/app"]) != 1 {
				t.Fatalf("state %+v, %v: want main's id kept", st, err)
			}
			if tc.cursorOnly {
				c, _ := watch.LoadState(state)
				if err := watch.SaveState(state, c); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 10 { // more than the history holds
				wtPublish(t, url, "acme/app", fmt.Sprintf("refs/heads/b%d", i))
			}
			stop = startRelay(t, nil, args...)
			wtEventually(t, func() bool { return n() == 1+tc.want }, "the reset's deliveries")
			// A push after the reset is delivered after anything the reset
			// queued (one repo, one target: in order): it closes the list.
			wtPublish(t, url, "acme/app", "refs/heads/z")
			wtEventually(t, func() bool { return n() >= 2+tc.want }, "the push after the reset")
			stop()
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 2+tc.want || got[0] != "refs/heads/main " || got[len(got)-1] != "refs/heads/z " {
				t.Fatalf("deliveries %q: want main, %d reset deliveries, z", got, tc.want)
			}
			for _, g := range got[1 : 1+tc.want] {
				if !strings.HasSuffix(g, " true") {
					t.Errorf("reset delivery %q not marked", g)
				}
				if g == "refs/heads/main true" && !tc.cursorOnly {
					t.Errorf("main re-sent though unchanged since its delivery before the restart")
				}
			}
		})
	}
}
