package hook

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

func TestPeelAndHead(t *testing.T) {
	t.Parallel()
	bare, wc := newRepos(t)
	r := openRepo(t, bare)
	main := git(t, wc, "rev-parse", "HEAD")
	git(t, wc, "tag", "light")
	git(t, wc, "tag", "-a", "-m", "one", "v1")
	git(t, wc, "tag", "-a", "-m", "nested", "v1n", "v1")
	tree := git(t, wc, "rev-parse", "HEAD^{tree}")
	git(t, wc, "tag", "-a", "-m", "a tree", "tree", tree)
	git(t, wc, "push", "-q", "origin", "--tags")
	id := func(ref string) string { return git(t, bare, "rev-parse", ref) }

	ups := []bus.RefUpdate{
		{Ref: "refs/tags/light", Old: z1, New: main},
		{Ref: "refs/tags/v1", Old: z1, New: id("refs/tags/v1")},
		{Ref: "refs/tags/v1n", Old: z1, New: id("refs/tags/v1n")},
		{Ref: "refs/tags/tree", Old: z1, New: id("refs/tags/tree")},
		{Ref: "refs/tags/gone", Old: main, New: z1},
	}
	if err := r.Peel(context.Background(), ups); err != nil {
		t.Fatal(err)
	}
	want := []string{"", main, main, tree, ""}
	for i, u := range ups {
		if u.Peeled != want[i] {
			t.Errorf("%s: peeled %q, want %q", u.Ref, u.Peeled, want[i])
		}
	}
	missing := []bus.RefUpdate{{Ref: "refs/tags/x", Old: z1, New: "1234567890123456789012345678901234567890"}}
	if err := r.Peel(context.Background(), missing); err == nil {
		t.Error("peel of a missing object: no error")
	}

	if h := r.Head(context.Background()); h != "refs/heads/main" {
		t.Errorf("head = %q, want refs/heads/main", h)
	}
	git(t, bare, "symbolic-ref", "HEAD", "refs/heads/other")
	if h := r.Head(context.Background()); h != "refs/heads/other" {
		t.Errorf("head after symbolic-ref = %q, want refs/heads/other", h)
	}
	git(t, bare, "update-ref", "--no-deref", "HEAD", main)
	if h := r.Head(context.Background()); h != "" {
		t.Errorf("detached head = %q, want empty", h)
	}
}

// TestHoldsOnly: a new repository's first push is recognised as every ref
// it has (so the hook marks it whole); anything more, or anything the
// check does not understand, is not.
func TestHoldsOnly(t *testing.T) {
	t.Parallel()
	bare, wc := newRepos(t)
	r := openRepo(t, bare)
	main := git(t, bare, "rev-parse", "refs/heads/main")
	first := []bus.RefUpdate{{Ref: "refs/heads/main", Old: z1, New: main}}
	if !r.HoldsOnly(first) {
		t.Fatal("first push of a new repository: not recognised as its every ref")
	}
	for name, ups := range map[string][]bus.RefUpdate{
		"no updates":   nil,
		"an update":    {{Ref: "refs/heads/main", Old: main, New: main}},
		"wrong id":     {{Ref: "refs/heads/main", Old: z1, New: "1234567890123456789012345678901234567890"}},
		"missing ref":  {first[0], {Ref: "refs/heads/dev", Old: z1, New: main}},
		"other branch": {{Ref: "refs/heads/dev", Old: z1, New: main}},
	} {
		if r.HoldsOnly(ups) {
			t.Errorf("%s: recognised as every ref", name)
		}
	}

	// A second branch: the first push's updates are no longer every ref.
	git(t, wc, "push", "-q", "origin", "main:dev")
	if r.HoldsOnly(first) {
		t.Error("a repository with two branches holds only main")
	}
	both := append(first, bus.RefUpdate{Ref: "refs/heads/dev", Old: z1, New: main})
	if !r.HoldsOnly(both) {
		t.Error("both branches, as one push: not recognised")
	}
	// Packed refs end the look at once: a big repository pays one line.
	git(t, bare, "pack-refs", "--all")
	if r.HoldsOnly(both) {
		t.Error("packed refs: recognised as every ref")
	}

	// A reftable (git 2.45's --ref-format=reftable; this machine's git may
	// predate it, so its directory stands in) is not looked into.
	rbare, _ := newRepos(t)
	if err := os.Mkdir(filepath.Join(rbare, "reftable"), 0o755); err != nil {
		t.Fatal(err)
	}
	id := git(t, rbare, "rev-parse", "refs/heads/main")
	if openRepo(t, rbare).HoldsOnly([]bus.RefUpdate{{Ref: "refs/heads/main", Old: z1, New: id}}) {
		t.Error("reftable: recognised as every ref")
	}
}

// TestWholePushRaced: a whole push replaces the repo's state, so a push
// to the new repository that published just before it would be lost from
// the state; the hook looks again after publishing and seeds when the refs
// are no longer only its own, and stays quiet when they are.
func TestWholePushRaced(t *testing.T) {
	t.Parallel()
	bare, wc := newRepos(t)
	r := openRepo(t, bare)
	n := newNode(t)
	main := git(t, bare, "rev-parse", "refs/heads/main")
	whole := &bus.Push{ID: "p1", Repo: "acme/app", Time: time.Now(), Whole: true, Head: "refs/heads/main",
		Updates: []bus.RefUpdate{{Ref: "refs/heads/main", Old: z1, New: main}}}
	var stderr strings.Builder
	run := &Runner{Stderr: &stderr, Git: gitBin}
	s := Settings{URL: n.URL, RepoName: "acme/app"}
	pub := &HTTPPublisher{URL: n.URL}

	run.completeGitState(context.Background(), s, r, pub, []*bus.Push{whole})
	if got := n.got(); len(got) != 0 || stderr.Len() != 0 {
		t.Fatalf("unraced whole push: published %d more, said %q", len(got), stderr.String())
	}

	git(t, wc, "push", "-q", "origin", "main:dev") // the racing push
	run.completeGitState(context.Background(), s, r, pub, []*bus.Push{whole})
	got := n.got()
	if len(got) != 1 || !got[0].Seed || len(got[0].Updates) != 2 || got[0].Head != "refs/heads/main" {
		t.Fatalf("raced whole push: published %+v, want one seed of main and dev", got)
	}
	if !strings.Contains(stderr.String(), "seeded acme/app with 2 refs") {
		t.Errorf("raced whole push: said %q", stderr.String())
	}
}
