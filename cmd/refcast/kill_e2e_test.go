package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/testnode"
	"github.com/refcast/refcast/wire"
)

// TestEmbeddedKillNineKeepsAcknowledged: `refcast serve` on the embedded bus
// is killed (SIGKILL) while 8 clients publish to it over HTTP, each a chain
// of fast-forwards to a repo of its own. Restarted on the same data
// directory, the node has every push it answered 200 for, in order, once
// each, and at most the one push per client that was in flight: its log
// (docs/architecture.md, "The embedded bus's log") is what it replays.
func TestEmbeddedKillNineKeepsAcknowledged(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	const token = "kill-token"
	data := t.TempDir()
	args := []string{"--data", data, "--publish-token", token, "--publish-rate", "-1", "--drain", "100ms"}
	node := testnode.Start(t, bin, "", args...)

	// Each client stops at perClient pushes, so a repo's history fits one
	// /v1/history answer (at most 100) however the clients are scheduled.
	const clients, perClient, killAfter = 8, 60, 160
	oid := func(c, i int) string {
		if i == 0 {
			return strings.Repeat("0", 40)
		}
		return fmt.Sprintf("%040x", c<<32|i)
	}
	var (
		total atomic.Int64
		kill  = make(chan struct{})
		once  sync.Once
		wg    sync.WaitGroup
	)
	acked := make([]int, clients) // per client, the last push answered 200
	for c := range clients {
		wg.Go(func() {
			hc := &http.Client{}
			for i := 1; i <= perClient; i++ {
				body, _ := json.Marshal(map[string]any{
					"id": fmt.Sprintf("kill-%d-%d", c, i), "repo": fmt.Sprintf("acme/k%d", c), "time": "2026-12-06T12:00:00Z",
					"updates": []map[string]string{{"ref": "refs/heads/main", "old": oid(c, i-1), "new": oid(c, i)}},
				})
				req, _ := http.NewRequest(http.MethodPost, node.URL+wire.PathPublish, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(wire.HeaderAuthorization, wire.Bearer(token))
				res, err := hc.Do(req)
				if err != nil {
					return // the node is gone
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					t.Errorf("client %d push %d: %s", c, i, res.Status)
					once.Do(func() { close(kill) })
					return
				}
				acked[c] = i
				if total.Add(1) == killAfter {
					once.Do(func() { close(kill) })
				}
			}
		})
	}
	go func() { // clients that all stopped early (the node died?) end the wait too
		wg.Wait()
		once.Do(func() { close(kill) })
	}()
	<-kill
	node.Kill() // SIGKILL, mid-publish
	wg.Wait()
	if n := total.Load(); n < killAfter {
		t.Fatalf("the clients stopped after %d acknowledged pushes, before the kill", n)
	}
	if t.Failed() {
		return
	}

	node = testnode.Start(t, bin, "", args...)
	for c := range clients {
		repo := fmt.Sprintf("acme/k%d", c)
		var hist struct {
			Events []bus.Event `json:"events"`
		}
		getJSON(t, node.URL+wire.PathHistory+"?repo="+url.QueryEscape(repo)+"&limit=100", &hist)
		n := len(hist.Events)
		if n < acked[c] || n > acked[c]+1 {
			t.Errorf("%s: %d events after the restart, want the %d acknowledged (and at most the one in flight)", repo, n, acked[c])
			continue
		}
		for i, ev := range hist.Events {
			if want := fmt.Sprintf("kill-%d-%d", c, i+1); ev.PushID != want || ev.New != oid(c, i+1) {
				t.Fatalf("%s: event %d is push %s to %s, want %s to %s", repo, i, ev.PushID, ev.New, want, oid(c, i+1))
			}
		}
		var snap wire.Snapshot
		getJSON(t, node.URL+wire.PathRefs+"?repo="+url.QueryEscape(repo), &snap)
		if len(snap.Repos) != 1 || snap.Repos[0].Refs["refs/heads/main"] != oid(c, n) {
			t.Errorf("%s: state %+v, want main at push %d", repo, snap.Repos, n)
		}
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", u, res.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", u, err, b)
	}
}
