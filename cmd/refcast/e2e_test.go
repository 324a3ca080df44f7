package main

import (
	"io"
	"os"
	"strings"

	"encoding/json"
	"github.com/refcast/refcast/hook"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/testnode"
)

// TestEndToEndPush is the whole path on one node: a real bare repository
// with the hook installed by `refcast install-hook`, real `git push`es, and
// SSE clients filtered by ref namespace.
func TestEndToEndPush(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	const token = "e2e-token"
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", token, "--drain", "100ms")

	bare, work := hookedRepo(t, bin, "--url", node.URL, "--repo", "acme/app")
	testnode.Git(t, bare, nil, "config", "refcast.token", token)

	heads := testnode.Subscribe(t, node.URL+"/v1/events?repo=acme/app&ref=refs/heads/*", nil)
	tags := testnode.Subscribe(t, node.URL+"/v1/events?repo=acme/app&ref=refs/tags/*", nil)
	heads.Next(t, 5*time.Second, "hello")
	tags.Next(t, 5*time.Second, "hello")

	g := func(args ...string) string { return testnode.Git(t, work, nil, args...) }
	g("commit", "-q", "--allow-empty", "-m", "first")
	first := g("rev-parse", "HEAD")
	g("push", "-q", "origin", "HEAD:main")
	g("tag", "-a", "v1", "-m", "release 1")
	g("push", "-q", "origin", "v1")
	g("commit", "-q", "--allow-empty", "-m", "second")
	second := g("rev-parse", "HEAD")
	g("push", "-q", "origin", "HEAD:main")
	g("reset", "-q", "--hard", first)
	g("commit", "-q", "--allow-empty", "-m", "rewritten")
	rewritten := g("rev-parse", "HEAD")
	g("push", "-q", "-f", "origin", "HEAD:main")
	g("push", "-q", "origin", "HEAD:refs/heads/feature/x")
	g("push", "-q", "origin", ":refs/heads/feature/x")

	type want struct {
		ref      string
		kind     bus.Kind
		old, new string
		forced   *bool
		subject  string
	}
	yes, no := true, false
	zero := bus.ZeroSHA1
	for i, w := range []want{
		{"refs/heads/main", bus.KindCreate, zero, first, nil, "first"},
		{"refs/heads/main", bus.KindUpdate, first, second, &no, "second"},
		{"refs/heads/main", bus.KindUpdate, second, rewritten, &yes, "rewritten"},
		{"refs/heads/feature/x", bus.KindCreate, zero, rewritten, nil, "rewritten"},
		{"refs/heads/feature/x", bus.KindDelete, rewritten, zero, nil, ""},
	} {
		ev := decodeEvent(t, heads.Next(t, 10*time.Second, "ref"))
		if ev.Repo != "acme/app" || ev.Ref != w.ref || ev.Kind != w.kind || ev.Old != w.old || ev.New != w.new {
			t.Fatalf("heads event %d = %s %s %s %s..%s, want %s %s %s..%s", i, ev.Repo, ev.Ref, ev.Kind, ev.Old, ev.New, w.ref, w.kind, w.old, w.new)
		}
		if w.forced != nil && (ev.Forced == nil || *ev.Forced != *w.forced) {
			t.Errorf("heads event %d (%s): forced = %v, want %v", i, w.ref, ev.Forced, *w.forced)
		}
		if w.subject != "" && (ev.Commit == nil || ev.Commit.Subject != w.subject) {
			t.Errorf("heads event %d: commit = %+v, want subject %q", i, ev.Commit, w.subject)
		}
		if ev.PushID == "" || ev.Source != "post-receive" {
			t.Errorf("heads event %d: push id %q source %q", i, ev.PushID, ev.Source)
		}
	}
	heads.None(t, 300*time.Millisecond, "ref")

	tag := decodeEvent(t, tags.Next(t, 10*time.Second, "ref"))
	if tag.Ref != "refs/tags/v1" || tag.Kind != bus.KindCreate || tag.Peeled != first {
		t.Fatalf("tag event = %+v, want refs/tags/v1 create peeled to %s", tag, first)
	}
	tags.None(t, 300*time.Millisecond, "ref")

	// The snapshot agrees with what the pushes did.
	res, err := http.Get(node.URL + "/v1/refs?repo=acme/app")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var snap struct {
		Repos []struct {
			Repo string            `json:"repo"`
			Refs map[string]string `json:"refs"`
		} `json:"repos"`
	}
	if err := json.NewDecoder(res.Body).Decode(&snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Repos) != 1 || snap.Repos[0].Refs["refs/heads/main"] != rewritten || len(snap.Repos[0].Refs) != 2 {
		t.Fatalf("snapshot = %+v", snap)
	}
}

func decodeEvent(t *testing.T, f testnode.Frame) bus.Event {
	t.Helper()
	var ev bus.Event
	if err := json.Unmarshal([]byte(f.Data), &ev); err != nil {
		t.Fatalf("event data %q: %v", f.Data, err)
	}
	if f.ID == "" || ev.V != bus.SchemaVersion {
		t.Fatalf("frame without id or schema version: %+v", f)
	}
	return ev
}

// hookedRepo creates a bare repository on branch main with the hook
// installed by `refcast install-hook BARE installArgs...`, and a clone of it.
func hookedRepo(t *testing.T, bin string, installArgs ...string) (bare, work string) {
	t.Helper()
	bare = filepath.Join(t.TempDir(), "app.git")
	return bare, hookedRepoAt(t, bin, bare, "main", installArgs...)
}

// hookedRepoAt is hookedRepo for a bare repository at the path bare (its
// parent directories made) whose HEAD is branch; it returns the clone.
func hookedRepoAt(t *testing.T, bin, bare, branch string, installArgs ...string) (work string) {
	t.Helper()
	work = filepath.Join(t.TempDir(), "work")
	dir := filepath.Dir(bare)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testnode.Git(t, dir, nil, "init", "-q", "--bare", "-b", branch, bare)
	runBin(t, bin, append([]string{"install-hook", bare}, installArgs...)...)
	testnode.Git(t, dir, nil, "clone", "-q", bare, work)
	return work
}

// runBin runs the built binary and fails the test on a non-zero exit.
func runBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("refcast %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestSyncSeedsState: a repository that existed before refcast gets its
// refs into the bus with one `sync` event, not one event per ref, in both
// object formats.
func TestSyncSeedsState(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	const token = "sync-token"
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", token, "--drain", "100ms")
	for _, format := range []string{"sha1", "sha256"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			work := filepath.Join(dir, "w")
			testnode.Git(t, dir, nil, "init", "-q", "--object-format="+format, "-b", "main", work)
			g := func(args ...string) string { return testnode.Git(t, work, nil, args...) }
			g("commit", "-q", "--allow-empty", "-m", "one")
			g("tag", "v1")
			g("branch", "dev")
			head := g("rev-parse", "HEAD")
			repo := "legacy/" + format
			stream := testnode.Subscribe(t, node.URL+"/v1/events?repo="+repo, nil)
			stream.Next(t, 5*time.Second, "hello")

			out, err := exec.Command(bin, "sync", work, "--url", node.URL, "--repo", repo).CombinedOutput()
			if err == nil {
				t.Fatalf("sync without a token succeeded: %s", out)
			}
			cmd := exec.Command(bin, "sync", work, "--url", node.URL, "--repo", repo)
			cmd.Env = append(testnode.GitEnv(t), "REFCAST_TOKEN="+token)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sync: %v\n%s", err, out)
			}
			ev := decodeEvent(t, stream.Next(t, 5*time.Second, "sync", "ref"))
			if ev.Kind != bus.KindSync || ev.Refs != 3 || ev.Repo != repo {
				t.Fatalf("event = %+v, want one sync of 3 refs", ev)
			}
			stream.None(t, 200*time.Millisecond, "ref", "sync")

			res, err := http.Get(node.URL + "/v1/refs?repo=" + repo)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var snap struct {
				Repos []struct {
					Refs map[string]string `json:"refs"`
				} `json:"repos"`
			}
			if err := json.NewDecoder(res.Body).Decode(&snap); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"refs/heads/main": head, "refs/heads/dev": head, "refs/tags/v1": head}
			if len(snap.Repos) != 1 || len(snap.Repos[0].Refs) != 3 {
				t.Fatalf("snapshot = %+v, want %v", snap, want)
			}
			for k, v := range want {
				if snap.Repos[0].Refs[k] != v {
					t.Fatalf("snapshot %s = %q, want %q", k, snap.Repos[0].Refs[k], v)
				}
			}
		})
	}
}

// TestServeDrainsSpool: `refcast serve --spool DIR` publishes pushes a hook
// left in its spool, once, and reports the spool's depth.
func TestServeDrainsSpool(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	dir := t.TempDir()
	sp, err := hook.OpenSpool(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	push := &bus.Push{ID: "spooled-1", Repo: "acme/spooled", Time: time.Now().UTC(), Source: "post-receive",
		Updates: []bus.RefUpdate{{Ref: "refs/heads/main", Old: bus.ZeroSHA1, New: strings.Repeat("ab", 20)}}}
	if _, err := sp.Write(push); err != nil {
		t.Fatal(err)
	}
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--spool", dir, "--drain", "100ms")
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(node.URL + "/v1/refs?repo=acme/spooled")
		if err != nil {
			t.Fatal(err)
		}
		var snap struct {
			Repos []struct {
				Refs map[string]string `json:"refs"`
			} `json:"repos"`
		}
		err = json.NewDecoder(res.Body).Decode(&snap)
		res.Body.Close()
		if err == nil && len(snap.Repos) == 1 && snap.Repos[0].Refs["refs/heads/main"] == push.Updates[0].New {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spooled push not published; snapshot %+v", snap)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left, _ := sp.Pending(); len(left) != 0 {
		t.Fatalf("spool still holds %v", left)
	}
	res, err := http.Get(node.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(b), "refcast_hook_spool_depth 0") {
		t.Fatalf("metrics lack refcast_hook_spool_depth 0:\n%s", b)
	}
}

// TestEmbeddedRestartResumeAndLongPoll: on the embedded default, a node
// restarted between pushes keeps its history and ref state: the snapshot's
// ETag still answers 304, and a client resumes with Last-Event-ID and gets
// exactly the missed events. A long-poll is released by a push through the
// real hook.
func TestEmbeddedRestartResumeAndLongPoll(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	const token = "restart-token"
	data := t.TempDir()
	addr := testnode.FreeAddr(t)
	args := []string{"--data", data, "--publish-token", token, "--drain", "100ms"}
	node := testnode.Start(t, bin, addr, args...)

	bare, work := hookedRepo(t, bin, "--url", node.URL, "--repo", "acme/app")
	testnode.Git(t, bare, nil, "config", "refcast.token", token)
	push := func(msg string) string { return pushCommit(t, work, msg) }

	s := testnode.Subscribe(t, node.URL+"/v1/events?repo=acme/app", nil)
	s.Next(t, 5*time.Second, "hello")
	first := push("first")
	f1 := s.Next(t, 10*time.Second, "ref")
	if decodeEvent(t, f1).New != first {
		t.Fatalf("first event %s", f1.Data)
	}
	s.Close()

	// Long-poll from the current cursor, released by the next push.
	etag, code := refsETag(t, node.URL+"/v1/refs?repo=acme/app", "")
	if code != http.StatusOK {
		t.Fatalf("snapshot status %d", code)
	}
	// wait=60s: only the push can answer 200 with its commit (the wait
	// running out answers 304), so no duration needs asserting.
	type answer struct {
		code int
		body string
	}
	done := make(chan answer, 1)
	go func() {
		res, err := http.Get(node.URL + "/v1/refs?repo=acme/app&wait=60s&since=" + strings.Trim(etag, `"`))
		if err != nil {
			done <- answer{code: -1, body: err.Error()}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- answer{res.StatusCode, string(b)}
	}()
	time.Sleep(300 * time.Millisecond) // let it register; a push before would answer at once, equally right
	second := push("second")
	a := <-done
	if a.code != http.StatusOK || !strings.Contains(a.body, second) {
		t.Fatalf("long-poll = %d: %s, want 200 with %s", a.code, a.body, second)
	}
	etag2, _ := refsETag(t, node.URL+"/v1/refs?repo=acme/app", "")

	node.Kill()
	node = testnode.Start(t, bin, addr, args...)
	if _, code := refsETag(t, node.URL+"/v1/refs?repo=acme/app", etag2); code != http.StatusNotModified {
		t.Fatalf("after restart, If-None-Match with the old ETag = %d, want 304", code)
	}
	third := push("third")
	fourth := push("fourth")
	r := testnode.Subscribe(t, node.URL+"/v1/events?repo=acme/app", http.Header{"Last-Event-ID": {f1.ID}})
	for _, want := range []string{second, third, fourth} {
		f := r.Next(t, 10*time.Second, "ref", "reset")
		if f.Event != "ref" || decodeEvent(t, f).New != want {
			t.Fatalf("resumed frame %s %s, want ref to %s", f.Event, f.Data, want)
		}
	}
	r.Next(t, 5*time.Second, "hello")
	r.None(t, 300*time.Millisecond, "ref", "reset")
}

// refsETag GETs a snapshot URL, optionally with If-None-Match, and returns
// the ETag and status.
func refsETag(t *testing.T, url, inm string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if inm != "" {
		req.Header.Set("If-None-Match", inm)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.Header.Get("ETag"), res.StatusCode
}
