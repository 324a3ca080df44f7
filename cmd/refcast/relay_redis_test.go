package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// relayResetReceiver records "ref=new[ reset]" per delivery of the
// refcast format, in arrival order.
type relayResetReceiver struct {
	mu  sync.Mutex
	got []string
}

func newRelayResetReceiver(t *testing.T) (*relayResetReceiver, *httptest.Server) {
	rc := &relayResetReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var e bus.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Errorf("body: %v", err)
		}
		s := e.Ref + "=" + e.New
		if r.Header.Get("X-Refcast-Reset") == "true" {
			s += " reset"
		}
		rc.mu.Lock()
		rc.got = append(rc.got, s)
		rc.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *relayResetReceiver) list() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

func (rc *relayResetReceiver) has(s string) bool { return slices.Contains(rc.list(), s) }

// relayPublish publishes one push to the node at url setting each ref to
// its id, retrying while the node cannot reach its bus (Redis restarting).
func relayPublish(t *testing.T, url, repo string, refs map[string]string) {
	t.Helper()
	wtPushN++
	p := bus.Push{ID: fmt.Sprintf("rp-%d-%d", time.Now().UnixNano(), wtPushN), Repo: repo, Pusher: "alice",
		Time: time.Now().UTC(), Source: "api"}
	for _, ref := range slices.Sorted(maps.Keys(refs)) {
		p.Updates = append(p.Updates, bus.RefUpdate{Ref: ref, Old: strings.Repeat("1", 40), New: refs[ref]})
	}
	body, _ := json.Marshal(p)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/publish", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+wtToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		if time.Now().After(deadline) { // a hang guard, not a measure
			t.Fatalf("publish: %v", err)
		}
	}
}

func copyTestFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRelayE2ERedisHistoryLoss: a relay follows a node on a real Redis and
// delivers a push; Redis then comes back from an RDB saved before the
// relay's last delivery (the history and ref state of that push are
// lost), with the node kept running or restarted with it, or while the
// relay is stopped (it then knows what it delivered from --state only).
// The node sends the relay a reset, and the relay delivers exactly the ref
// whose id differs from what it delivered last, marked reset; nothing
// else.
func TestRelayE2ERedisHistoryLoss(t *testing.T) {
	testnode.Require(t, "redis-server")
	bin := testnode.Build(t)
	id := func(c byte) string { return strings.Repeat(string(c), 40) }
	for _, tc := range []struct {
		name                      string
		restartNode, restartRelay bool
	}{
		{"node running", false, false},
		{"node restarted", true, false},
		{"relay restarted", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t, redistest.Options{})
			nodeArgs := []string{"--redis", rs.URL(), "--publish-token", wtToken, "--drain", "100ms", "--heartbeat", "500ms"}
			node := testnode.Start(t, bin, "", nodeArgs...)
			rc, srv := newRelayResetReceiver(t)
			dir := t.TempDir()
			secret := filepath.Join(dir, "secret")
			os.WriteFile(secret, []byte(relaySecretText), 0o600)
			relayArgs := []string{node.URL, "--repo", "acme/app", "--state", filepath.Join(dir, "state"),
				"--to", srv.URL, "--format", "refcast", "--secret-file", secret}
			stopRelay := startRelay(t, nil, relayArgs...)

			relayPublish(t, node.URL, "acme/app", map[string]string{"refs/heads/main": id('a'), "refs/heads/dev": id('b'), "refs/tags/v1": id('c')})
			wtEventually(t, func() bool { return len(rc.list()) == 3 }, "the first push's 3 deliveries")
			admin := rs.Client()
			if err := admin.Save(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			old := filepath.Join(t.TempDir(), "old.rdb")
			copyTestFile(t, filepath.Join(rs.Dir(), "dump.rdb"), old)

			relayPublish(t, node.URL, "acme/app", map[string]string{"refs/heads/main": id('d')})
			wtEventually(t, func() bool { return len(rc.list()) == 4 }, "the second push delivered")

			// Redis loses the second push: history and ref state go back
			// to the RDB (main at a again).
			if tc.restartRelay {
				if code := stopRelay(); code != 0 {
					t.Fatalf("relay exit %d", code)
				}
			}
			if tc.restartNode {
				node.Kill()
			}
			rs.Kill()
			copyTestFile(t, old, filepath.Join(rs.Dir(), "dump.rdb"))
			rs.Restart()
			if tc.restartNode {
				testnode.Start(t, bin, node.Addr, nodeArgs...)
			}
			if tc.restartRelay {
				startRelay(t, nil, relayArgs...)
			}
			wtEventually(t, func() bool { return rc.has("refs/heads/main=" + id('a') + " reset") }, "the reset's delivery of main")
			// A push after the reset: delivered after anything the reset
			// queued (one repo, one target: in order), so it closes the list.
			relayPublish(t, node.URL, "acme/app", map[string]string{"refs/heads/dev": id('e')})
			wtEventually(t, func() bool { return rc.has("refs/heads/dev=" + id('e')) }, "the push after the reset")
			want := []string{
				"refs/heads/dev=" + id('b'), "refs/heads/main=" + id('a'), "refs/tags/v1=" + id('c'),
				"refs/heads/main=" + id('d'),
				"refs/heads/main=" + id('a') + " reset",
				"refs/heads/dev=" + id('e'),
			}
			if got := rc.list(); !slices.Equal(got, want) {
				t.Errorf("deliveries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
