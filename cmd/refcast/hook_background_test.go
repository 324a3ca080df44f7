package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/hook"
	"github.com/refcast/refcast/internal/testnode"
)

// TestHookBackgroundFlush: a push made while the node is down is spooled,
// and the background flush the hook starts publishes it once the node is
// up, with no further push and no manual flush. The push itself returns
// at once: git waits for the hook, not for the flusher.
func TestHookBackgroundFlush(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	addr := testnode.FreeAddr(t) // nothing listens yet
	bare, work := hookedRepo(t, bin, "--url", "http://"+addr)
	bg := []string{"REFCAST_FLUSH_BACKGROUND=true", "REFCAST_TOKEN=" + wtToken}

	sha := commitFile(t, work, "while down")
	out := testnode.Git(t, work, bg, "push", "origin", "HEAD:main")
	if !strings.Contains(out, "spooled") || !strings.Contains(out, "background flush") {
		t.Fatalf("push output lacks the spool and background flush warning:\n%s", out)
	}
	sp, err := hook.OpenSpool(filepath.Join(bare, hook.DefaultSpoolName), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := sp.Pending(); len(n) != 1 {
		t.Fatalf("spool holds %v, want the one push", n)
	}
	logPath := filepath.Join(sp.Dir(), hook.FlushLogName)
	wtEventually(t, func() bool { return strings.Contains(wtRead(logPath), "retrying") }, "the background flusher's first failure")

	node := testnode.Start(t, bin, addr, "--data", t.TempDir(), "--drain", "100ms", "--publish-token", wtToken)
	// A generous guard, not a measured duration: the flusher's backoff
	// reaches 16s within a minute of failures.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if refsOf(t, node.URL, "app")["refs/heads/main"] == sha {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spooled push not published by the background flush; log:\n%s", wtRead(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for sp.FlusherRunning() {
		if time.Now().After(deadline) {
			t.Fatalf("background flusher still running with an empty spool; log:\n%s", wtRead(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, _ := sp.Pending(); len(n) != 0 {
		t.Fatalf("spool still holds %v", n)
	}
	if log := wtRead(logPath); !strings.Contains(log, "background flush done") || !strings.Contains(log, "published=1") {
		t.Errorf("flush log:\n%s", log)
	}
}

// refsOf returns a repo's refs from the node's snapshot.
func refsOf(t *testing.T, url, repo string) map[string]string {
	t.Helper()
	res, err := http.Get(url + "/v1/refs?repo=" + repo)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var snap struct {
		Repos []struct {
			Refs map[string]string `json:"refs"`
		} `json:"repos"`
	}
	if err := json.NewDecoder(res.Body).Decode(&snap); err != nil || len(snap.Repos) != 1 {
		return nil
	}
	return snap.Repos[0].Refs
}
