package hook

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/refcast/refcast/bus"
)

// TestRefsMatchGit checks that Refs, read in-process, lists what git
// for-each-ref lists: loose and packed refs, annotated tags unpeeled, a
// symbolic ref left out, refs seen from a linked worktree (its common
// directory's refs), and a SHA-256 repository (read through git).
func TestRefsMatchGit(t *testing.T) {
	sha1Bare, sha1WC := newRepos(t)
	git(t, sha1WC, "tag", "-a", "-m", "v1", "v1")
	git(t, sha1WC, "branch", "side")
	git(t, sha1WC, "push", "-q", "origin", "side", "v1")
	git(t, sha1Bare, "pack-refs", "--all")
	commit(t, sha1WC, "loose after pack")
	git(t, sha1WC, "push", "-q", "origin", "main")
	git(t, sha1Bare, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
	wt := filepath.Join(t.TempDir(), "wt")
	git(t, sha1WC, "worktree", "add", "-q", "-b", "wtbranch", wt)

	sha256Bare, _ := newRepos(t, "--object-format=sha256")

	for _, tc := range []struct{ name, dir string }{
		{"bare, packed and loose", sha1Bare},
		{"work tree", sha1WC},
		{"linked worktree", wt},
		{"sha256", sha256Bare},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openRepo(t, tc.dir)
			got, err := r.Refs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if r.ObjectFormat == "sha1" {
				// The in-process reader itself, not git behind it.
				if got, err = r.refsGoGit(); err != nil {
					t.Fatalf("refsGoGit: %v", err)
				}
			}
			var want []bus.RefUpdate
			out := git(t, tc.dir, "for-each-ref", "--format=%(objectname) %(refname) %(symref)", "refs/")
			for line := range strings.SplitSeq(out, "\n") {
				f := strings.Fields(line)
				if len(f) == 2 { // symbolic refs (a third field) are left out
					want = append(want, bus.RefUpdate{Ref: f[1], New: f[0]})
				}
			}
			sortRefs(want)
			if len(got) != len(want) {
				t.Fatalf("Refs = %v\nwant %v", got, want)
			}
			for i := range want {
				if got[i].Ref != want[i].Ref || got[i].New != want[i].New {
					t.Fatalf("Refs[%d] = %s %s, want %s %s", i, got[i].Ref, got[i].New, want[i].Ref, want[i].New)
				}
			}
		})
	}
}
