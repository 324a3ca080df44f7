package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The hook reads its repository and configuration from what git hands it
// (GIT_DIR, the config files) instead of running git rev-parse and git
// config, unless it cannot be sure (hook/direct.go). These tests run the
// same pushes through the real git and hook twice, once reading directly
// and once with REFCAST_HOOK_DIRECT=false (every answer from git, as
// before), and require the same pushes published; git's trace of the
// commands the hook started shows which way each run went.

// directWorld is a hookWorld whose git writes a trace of every git command
// (the hook's included) to trace, with fixed dates so that two worlds
// make the same commits.
type directWorld struct {
	*hookWorld
	n     *testNode
	trace string
	// afterPush, when set, runs after every push: a queued hook's push is
	// published by a drainer, after git push returns.
	afterPush func()
}

func newDirectWorld(t *testing.T, direct bool, extraEnv ...string) *directWorld {
	t.Helper()
	trace := filepath.Join(t.TempDir(), "trace")
	env := append([]string{"GIT_TRACE=" + trace, "GIT_AUTHOR_DATE=@1700000000 +0000", "GIT_COMMITTER_DATE=@1700000000 +0000"}, extraEnv...)
	if !direct {
		env = append(env, "REFCAST_HOOK_DIRECT=false")
	}
	return &directWorld{hookWorld: newHookWorld(t, env...), n: newTestNode(t), trace: trace}
}

// sha256 replaces the world's repositories by SHA-256 ones.
func (w *directWorld) sha256() {
	dir := w.t.TempDir()
	w.bare, w.wc = filepath.Join(dir, "srv.git"), filepath.Join(dir, "wc")
	w.git(dir, "init", "-q", "--bare", "--object-format=sha256", w.bare)
	w.git(dir, "init", "-q", "--object-format=sha256", w.wc)
	w.git(w.wc, "remote", "add", "origin", w.bare)
	w.commit("first")
	w.git(w.wc, "push", "-q", "origin", "main")
}

// nonBare replaces the bare repository by a non-bare one that accepts
// pushes to its checked-out branch.
func (w *directWorld) nonBare() {
	dir := w.t.TempDir()
	w.bare = filepath.Join(dir, "srv")
	w.git(dir, "clone", "-q", w.wc, w.bare)
	w.git(w.bare, "config", "receive.denyCurrentBranch", "ignore")
	w.git(w.wc, "remote", "set-url", "origin", w.bare)
}

// hookGitCalls lists the git commands the hook started since the last
// call, by their telling arguments.
func (w *directWorld) hookGitCalls() (revParse, config int) {
	revParse, config, _ = w.hookGitCallsAll()
	return revParse, config
}

// hookGitCallsAll is hookGitCalls with the git cat-file --batch processes
// (enrichment's object reads) counted too.
func (w *directWorld) hookGitCallsAll() (revParse, config, catFile int) {
	w.t.Helper()
	data, _ := os.ReadFile(w.trace)
	os.Remove(w.trace)
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.Contains(line, "trace: built-in: git") && strings.HasSuffix(line, " cat-file --batch") {
			catFile++
		}
		if strings.Contains(line, "trace: built-in: git rev-parse --path-format=absolute --absolute-git-dir") {
			revParse++
		}
		if strings.Contains(line, "trace: built-in: git") && strings.Contains(line, " config -z --get-regexp") {
			config++
		}
	}
	return revParse, config, catFile
}

// published is what the node got, without what differs between two runs
// of the same pushes (push ids, times).
func (w *directWorld) published() string {
	w.t.Helper()
	pushes := w.n.got()
	for i := range pushes {
		pushes[i].ID, pushes[i].Time = "", time.Time{}
	}
	data, err := json.MarshalIndent(pushes, "", " ")
	if err != nil {
		w.t.Fatal(err)
	}
	return string(data)
}

// pushes is the scenario of the post-receive tests: a new branch, a
// fast-forward and an annotated tag in one push, a forced update, a
// deletion.
func (w *directWorld) pushes() {
	w.commit("second")
	w.git(w.wc, "tag", "-a", "-m", "v1", "v1")
	w.push("main", "v1", "HEAD:refs/heads/feature")
	w.git(w.wc, "reset", "-q", "--hard", "HEAD~1")
	w.commit("rewritten")
	w.push("-f", "main")
	w.push(":feature")
}

// push runs git push -q origin ARGS in the clone, then afterPush.
func (w *directWorld) push(args ...string) {
	w.t.Helper()
	w.git(w.wc, append([]string{"push", "-q", "origin"}, args...)...)
	if w.afterPush != nil {
		w.afterPush()
	}
}

func TestHookDirectPublishesTheSame(t *testing.T) {
	t.Parallel()
	postReceive := func(w *directWorld) { w.install("--url", w.n.URL) }
	refTxn := func(w *directWorld) {
		w.install("--url", w.n.URL, "--mode", "reference-transaction")
	}
	cases := []struct {
		name       string
		setup, run func(w *directWorld)
	}{
		{"bare post-receive", postReceive, (*directWorld).pushes},
		{"sha256 post-receive", func(w *directWorld) { w.sha256(); postReceive(w) }, (*directWorld).pushes},
		{"non-bare post-receive", func(w *directWorld) { w.nonBare(); postReceive(w) }, (*directWorld).pushes},
		{"bare reference-transaction", refTxn, func(w *directWorld) {
			w.pushes()
			w.git(w.bare, "update-ref", "refs/heads/server-side", "main")
		}},
		{"reference-transaction in a linked worktree", func(w *directWorld) {
			w.bare = w.wc // the hook goes into the clone, where the commits are made
			refTxn(w)
			w.git(w.wc, "branch", "gone")
			w.git(w.wc, "worktree", "add", "-q", "-b", "topic", filepath.Join(filepath.Dir(w.wc), "linked"))
		}, func(w *directWorld) {
			linked := filepath.Join(filepath.Dir(w.wc), "linked")
			w.git(linked, "commit", "-q", "--allow-empty", "-m", "in the worktree")
			w.git(linked, "tag", "-a", "-m", "t", "wt-tag")
			w.git(linked, "branch", "-q", "-D", "gone")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got [2]string
			for i, direct := range []bool{true, false} {
				w := newDirectWorld(t, direct)
				tc.setup(w)
				w.hookGitCalls()
				tc.run(w)
				revParse, config, catFile := w.hookGitCallsAll()
				if direct && (revParse != 0 || config != 0) {
					t.Errorf("direct: the hook ran git rev-parse %d and git config %d times", revParse, config)
				}
				// These pushes' objects arrive loose: read directly.
				if direct && catFile != 0 {
					t.Errorf("direct: the hook ran git cat-file --batch %d times for loose objects", catFile)
				}
				if !direct && catFile == 0 {
					t.Errorf("REFCAST_HOOK_DIRECT=false: the hook never ran git cat-file --batch")
				}
				if !direct && (revParse == 0 || config == 0) {
					t.Errorf("REFCAST_HOOK_DIRECT=false: the hook ran git rev-parse %d and git config %d times", revParse, config)
				}
				if len(w.n.got()) == 0 {
					t.Fatal("nothing published")
				}
				got[i] = w.published()
			}
			if got[0] != got[1] {
				t.Fatalf("direct published\n%s\nwith git\n%s", got[0], got[1])
			}
		})
	}
}

// TestHookDirectIncludeAsksGit: a repository config with an include is
// read by git config (the repository itself still without rev-parse), and
// the included setting counts.
func TestHookDirectIncludeAsksGit(t *testing.T) {
	t.Parallel()
	w := newDirectWorld(t, true)
	w.install("--url", w.n.URL)
	included := filepath.Join(t.TempDir(), "refcast.inc")
	os.WriteFile(included, []byte("[refcast]\n\trepo = from/include\n"), 0o644)
	w.git(w.bare, "config", "include.path", included)
	w.hookGitCalls()
	w.commit("two")
	w.git(w.wc, "push", "-q", "origin", "main")
	revParse, config := w.hookGitCalls()
	if revParse != 0 || config != 1 {
		t.Errorf("the hook ran git rev-parse %d and git config %d times, want 0 and 1", revParse, config)
	}
	if got := w.n.got(); len(got) != 1 || got[0].Repo != "from/include" {
		t.Fatalf("published %+v, want one push to from/include", got)
	}
}

// TestHookDirectConfigParametersAsksGit: git -c (GIT_CONFIG_PARAMETERS,
// which the hook inherits from a local update-ref) reaches the hook's
// configuration through git config.
func TestHookDirectConfigParametersAsksGit(t *testing.T) {
	t.Parallel()
	w := newDirectWorld(t, true)
	w.install("--url", w.n.URL, "--mode", "reference-transaction")
	w.hookGitCalls()
	w.git(w.bare, "-c", "refcast.pusher=ignored", "-c", "refcast.repo=from/cmdline", "update-ref", "refs/heads/x", "main")
	revParse, config := w.hookGitCalls()
	if revParse != 0 || config == 0 {
		t.Errorf("the hook ran git rev-parse %d and git config %d times, want 0 and some", revParse, config)
	}
	if got := w.n.got(); len(got) != 1 || got[0].Repo != "from/cmdline" {
		t.Fatalf("published %+v, want one push to from/cmdline", got)
	}
}
