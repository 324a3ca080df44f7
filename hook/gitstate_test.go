package hook

import (
	"context"
	"testing"

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
