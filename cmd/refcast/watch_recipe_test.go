package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/refcast/refcast/internal/testnode"
)

// mirrorRecipe is the --exec of docs/watch.md's mirror recipe, verbatim.
const mirrorRecipe = `
case "$REFCAST_KIND" in
  reset|sync) git -C "$MIRROR" fetch --prune origin ;;
  delete) git -C "$MIRROR" update-ref -d "$REFCAST_REF" ;;
  *) git -C "$MIRROR" fetch origin "+$REFCAST_REF:$REFCAST_REF" ;;
esac`

// TestWatchRecipeMirror runs the mirror recipe end to end with real git:
// a push to an origin with the hook reaches the node, watch --exec
// fetches the changed ref into a mirror, and the mirror has the commit.
func TestWatchRecipeMirror(t *testing.T) {
	doc, err := os.ReadFile("../../docs/watch.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "--exec '"+mirrorRecipe+"'") {
		t.Fatal("docs/watch.md's mirror recipe differs from the one tested here")
	}
	bin := testnode.Build(t)
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", wtToken, "--drain", "100ms")
	bare, work := hookedRepo(t, bin, "--url", node.URL)
	env := []string{"REFCAST_TOKEN=" + wtToken}
	commitFile(t, work, "first")
	testnode.Git(t, work, env, "push", "-q", "origin", "HEAD:main")

	mirror := filepath.Join(t.TempDir(), "app.git")
	testnode.Git(t, t.TempDir(), nil, "clone", "-q", "--mirror", bare, mirror)
	t.Setenv("MIRROR", mirror) // the recipe's command inherits watch's environment
	t.Setenv("HOME", t.TempDir())
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	w := startWatch(t, nil, node.URL, "--repo", "app", "--state", filepath.Join(t.TempDir(), "state"), "--exec", mirrorRecipe)

	sha := commitFile(t, work, "second")
	testnode.Git(t, work, env, "push", "-q", "origin", "HEAD:main")
	testnode.Git(t, work, env, "push", "-q", "origin", "HEAD:refs/heads/topic")
	has := func(ref string) bool {
		out, err := exec.Command("git", "-C", mirror, "rev-parse", "--verify", "-q", ref).Output()
		return err == nil && strings.TrimSpace(string(out)) == sha
	}
	wtEventually(t, func() bool { return has("refs/heads/main") && has("refs/heads/topic") }, "the mirror to have the pushed commit: "+w.err.String())

	testnode.Git(t, work, env, "push", "-q", "origin", ":refs/heads/topic")
	wtEventually(t, func() bool {
		return exec.Command("git", "-C", mirror, "rev-parse", "--verify", "-q", "refs/heads/topic").Run() != nil
	}, "the mirror to drop the deleted branch: "+w.err.String())
	if code := w.stop(); code != 0 {
		t.Errorf("watch exited %d: %s", code, w.err.String())
	}
}
