package hook

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

func enrichOne(t *testing.T, r *Repo, u bus.RefUpdate, opts EnrichOptions) bus.RefUpdate {
	t.Helper()
	ups := []bus.RefUpdate{u}
	st := r.Enrich(context.Background(), ups, opts)
	t.Logf("%s %s: %+v in %v", u.Kind(), u.Ref, ups[0], st.Elapsed)
	return ups[0]
}

func TestEnrichRealRepo(t *testing.T) {
	t.Parallel()
	for _, reader := range []string{"auto", "go-git", "git"} {
		t.Run(reader, func(t *testing.T) {
			t.Parallel()
			bare, wc := newRepos(t)
			r := openRepo(t, bare)
			opts := EnrichOptions{Budget: 5 * time.Second, ObjectReader: reader}
			base := git(t, wc, "rev-parse", "HEAD")

			// New branch with three commits nobody else has.
			git(t, wc, "checkout", "-q", "-b", "feature")
			for i := range 3 {
				commit(t, wc, fmt.Sprintf("feature %d\n\nbody", i))
			}
			tip := git(t, wc, "rev-parse", "HEAD")
			git(t, wc, "push", "-q", "origin", "feature")
			u := enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/feature", Old: z1, New: tip}, opts)
			if u.Enriched != bus.EnrichFull || u.Forced != nil || u.Commits == nil || *u.Commits != 3 || u.Commit == nil || u.Commit.Subject != "feature 2" || u.Commit.Author != "Ada Author" || u.Commit.Time.IsZero() {
				t.Fatalf("new branch: %+v %+v", u, u.Commit)
			}

			// Fast-forward of main by two commits.
			git(t, wc, "checkout", "-q", "main")
			commit(t, wc, "ff 1")
			ff := commit(t, wc, "ff 2")
			git(t, wc, "push", "-q", "origin", "main")
			u = enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/main", Old: base, New: ff}, opts)
			if u.Enriched != bus.EnrichFull || u.Forced == nil || *u.Forced || *u.Commits != 2 || u.Commit.Subject != "ff 2" {
				t.Fatalf("fast-forward: %+v", u)
			}

			// Force-push: main rewritten from base.
			git(t, wc, "reset", "-q", "--hard", base)
			forced := commit(t, wc, "rewritten")
			git(t, wc, "push", "-q", "-f", "origin", "main")
			u = enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/main", Old: ff, New: forced}, opts)
			if u.Enriched != bus.EnrichFull || u.Forced == nil || !*u.Forced || *u.Commits != 1 {
				t.Fatalf("force-push: %+v", u)
			}

			// Delete.
			git(t, wc, "push", "-q", "origin", ":feature")
			u = enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/feature", Old: tip, New: z1}, opts)
			if u.Enriched != bus.EnrichNone || u.Commit != nil || u.Forced != nil {
				t.Fatalf("delete: %+v", u)
			}

			// Annotated tag: peeled, no commit count.
			git(t, wc, "tag", "-a", "-m", "release one", "v1", forced)
			tag := git(t, wc, "rev-parse", "v1")
			git(t, wc, "push", "-q", "origin", "v1")
			u = enrichOne(t, r, bus.RefUpdate{Ref: "refs/tags/v1", Old: z1, New: tag}, opts)
			if u.Enriched != bus.EnrichFull || u.Peeled != forced || u.Commit.Subject != "rewritten" || u.Commits != nil {
				t.Fatalf("annotated tag: %+v", u)
			}

			// Over budget: published without enrichment, marked partial.
			u = enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/main", Old: ff, New: forced}, EnrichOptions{Budget: time.Nanosecond, ObjectReader: reader})
			if u.Enriched != bus.EnrichPartial {
				t.Fatalf("over budget: %+v", u)
			}
			// Disabled.
			u = enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/main", Old: ff, New: forced}, EnrichOptions{Budget: -1})
			if u.Enriched != bus.EnrichNone || u.Commit != nil {
				t.Fatalf("disabled: %+v", u)
			}
		})
	}
}

func TestEnrichCommitBound(t *testing.T) {
	t.Parallel()
	bare, wc := newRepos(t)
	base := git(t, wc, "rev-parse", "HEAD")
	// 120 commits in one fast-import stream on top of base.
	var sb strings.Builder
	fmt.Fprintf(&sb, "reset refs/heads/main\nfrom %s\n", base)
	for i := range 120 {
		msg := fmt.Sprintf("c%d", i)
		fmt.Fprintf(&sb, "commit refs/heads/main\ncommitter A <a@x> %d +0000\ndata %d\n%s\n", 1700000000+i, len(msg), msg)
	}
	gitIn(t, bare, sb.String(), "fast-import", "--quiet")
	tip := git(t, bare, "rev-parse", "refs/heads/main")
	u := enrichOne(t, openRepo(t, bare), bus.RefUpdate{Ref: "refs/heads/main", Old: base, New: tip}, EnrichOptions{Budget: 5 * time.Second})
	if *u.Commits != DefaultMaxCommits || !u.CommitsMore || u.Enriched != bus.EnrichFull {
		t.Fatalf("bound: %+v", u)
	}
}

// thousandTags is a bare repository with 1,000 annotated tags on HEAD,
// and the ref updates that create them.
func thousandTags(tb testing.TB) (bare, head string, ups []bus.RefUpdate) {
	tb.Helper()
	bare, wc := newRepos(tb)
	head = git(tb, wc, "rev-parse", "HEAD")
	var sb strings.Builder
	for i := range 1000 {
		msg := fmt.Sprintf("tag %d", i)
		fmt.Fprintf(&sb, "tag t%04d\nfrom %s\ntagger T <t@x> 1700000000 +0000\ndata %d\n%s\n", i, head, len(msg), msg)
	}
	gitIn(tb, bare, sb.String(), "fast-import", "--quiet")
	for line := range strings.SplitSeq(git(tb, bare, "for-each-ref", "--format=%(objectname) %(refname)", "refs/tags/"), "\n") {
		id, ref, _ := strings.Cut(line, " ")
		ups = append(ups, bus.RefUpdate{Ref: ref, Old: z1, New: id})
	}
	if len(ups) != 1000 {
		tb.Fatalf("%d tags", len(ups))
	}
	return bare, head, ups
}

// TestEnrichThousandTags: a push of 1,000 annotated tags is enriched
// correctly and stays one valid push. The budget here is far above any
// real figure, so the outcome does not depend on the machine's speed;
// how many tags the default budget covers is BenchmarkEnrichThousandTags'
// figure.
func TestEnrichThousandTags(t *testing.T) {
	t.Parallel()
	bare, head, ups := thousandTags(t)
	r := openRepo(t, bare)
	st := r.Enrich(context.Background(), ups, EnrichOptions{Budget: time.Hour})
	t.Logf("1000 annotated tags: %+v", st)
	for _, u := range ups {
		if u.Enriched != bus.EnrichFull || u.Peeled != head || u.Commit == nil {
			t.Fatalf("tag %+v", u)
		}
	}
	if st.Full != 1000 {
		t.Errorf("%d of 1000 tags fully enriched", st.Full)
	}
	p := BuildPushes(NewPushID(time.Now()), "acme/app", "", SourcePostReceive, time.Now(), ups)
	if len(p) != 1 || p[0].Validate() != nil {
		t.Fatal("push of 1000 tags does not validate")
	}
}

// BenchmarkEnrichThousandTags enriches a push of 1,000 annotated tags
// with the default budget and reports how many it fully enriched.
func BenchmarkEnrichThousandTags(b *testing.B) {
	bare, _, ups := thousandTags(b)
	r := openRepo(b, bare)
	var full int
	for b.Loop() {
		batch := slices.Clone(ups)
		full = r.Enrich(context.Background(), batch, EnrichOptions{}).Full
	}
	b.ReportMetric(float64(full), "full/1000")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "µs/tag")
}

func TestEnrichSHA256(t *testing.T) {
	t.Parallel()
	bare, wc := newRepos(t, "--object-format=sha256")
	r := openRepo(t, bare)
	if r.ObjectFormat != "sha256" {
		t.Fatalf("format %q", r.ObjectFormat)
	}
	base := git(t, wc, "rev-parse", "HEAD")
	tip := commit(t, wc, "sha256 commit")
	git(t, wc, "push", "-q", "origin", "main")
	git(t, wc, "tag", "-a", "-m", "t", "v1")
	tag := git(t, wc, "rev-parse", "v1")
	git(t, wc, "push", "-q", "origin", "v1")
	ups := []bus.RefUpdate{
		{Ref: "refs/heads/main", Old: base, New: tip},
		{Ref: "refs/tags/v1", Old: bus.ZeroSHA256, New: tag},
	}
	r.Enrich(context.Background(), ups, EnrichOptions{Budget: 5 * time.Second})
	if u := ups[0]; u.Enriched != bus.EnrichFull || *u.Forced || *u.Commits != 1 || u.Commit.Subject != "sha256 commit" {
		t.Fatalf("sha256 update: %+v", u)
	}
	if u := ups[1]; u.Enriched != bus.EnrichFull || u.Peeled != tip {
		t.Fatalf("sha256 tag: %+v", u)
	}
	p := BuildPushes("p-1", "acme/app", "", SourcePostReceive, time.Now(), ups)
	if err := p[0].Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestEnrichAlternates(t *testing.T) {
	t.Parallel()
	parent, wc := newRepos(t)
	base := commit(t, wc, "in the parent only")
	git(t, wc, "push", "-q", "origin", "main")
	fork := filepath.Join(t.TempDir(), "fork.git")
	git(t, wc, "clone", "-q", "--bare", "--shared", parent, fork) // objects/info/alternates, absolute
	if n := git(t, fork, "count-objects", "-v"); !strings.Contains(n, "count: 0") {
		t.Logf("fork objects: %s", n)
	}
	git(t, wc, "remote", "add", "fork", fork)
	tip := commit(t, wc, "in the fork")
	git(t, wc, "push", "-q", "fork", "main")

	r := openRepo(t, fork)
	// go-git alone reads the parent's objects through the alternates.
	src := newGoGitSource(r.CommonDir)
	defer src.close()
	if typ, _, err := src.object(context.Background(), base); err != nil || typ != "commit" {
		t.Fatalf("go-git through alternates: %q %v", typ, err)
	}
	for _, reader := range []string{"go-git", "auto"} {
		u := enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/main", Old: base, New: tip}, EnrichOptions{Budget: 5 * time.Second, ObjectReader: reader})
		if u.Enriched != bus.EnrichFull || *u.Forced || *u.Commits != 1 {
			t.Fatalf("%s: %+v", reader, u)
		}
	}

	// A relative alternate (hosting sites' object pools use them): go-git
	// cannot follow it, the git fallback can.
	alt := filepath.Join(fork, "objects", "info", "alternates")
	rel, _ := filepath.Rel(filepath.Join(fork, "objects"), filepath.Join(parent, "objects"))
	os.WriteFile(alt, []byte(rel+"\n"), 0o644)
	u := enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/x", Old: z1, New: base}, EnrichOptions{Budget: 5 * time.Second})
	if u.Enriched != bus.EnrichFull || u.Commit == nil || u.Commit.Subject != "in the parent only" {
		t.Fatalf("relative alternates: %+v", u)
	}
}

func TestParseCommitAndSignature(t *testing.T) {
	t.Parallel()
	raw := "tree " + idA + "\nparent " + idB + "\nauthor Zoë <z@x> 1700000000 +0130\ncommitter C <c@x> 1700000100 -0500\ngpgsig -----BEGIN\n line\n -----END\n\n\nSubject line  \nmore\n"
	c, err := parseCommit([]byte(raw))
	if err != nil || c.author != "Zoë" || c.subject != "Subject line" || c.time.Unix() != 1700000100 || len(c.parents) != 1 {
		t.Fatalf("%+v %v", c, err)
	}
	if _, offset := c.time.Zone(); offset != -5*3600 {
		t.Fatalf("zone %d", offset)
	}
	if _, err := parseCommit([]byte("garbage")); err == nil {
		t.Fatal("garbage parsed")
	}
}

// TestEnrichLinearShortcut checks the fast-forward shortcut (a chain of
// single-parent commits read through cat-file) against git itself, on both
// sides of its walk limit and across a merge, where it must defer to git.
func TestEnrichLinearShortcut(t *testing.T) {
	t.Parallel()
	bare, wc := newRepos(t)
	r := openRepo(t, bare)
	for _, tc := range []struct {
		name string
		make func() // adds commits to main in wc
	}{
		{"one commit", func() { commit(t, wc, "one") }},
		{"at the walk limit", func() {
			for i := range maxLinearWalk {
				commit(t, wc, fmt.Sprintf("limit %d", i))
			}
		}},
		{"past the walk limit", func() {
			for i := range maxLinearWalk + 1 {
				commit(t, wc, fmt.Sprintf("past %d", i))
			}
		}},
		{"through a merge", func() {
			git(t, wc, "checkout", "-q", "-b", "side")
			commit(t, wc, "side")
			git(t, wc, "checkout", "-q", "main")
			commit(t, wc, "main")
			git(t, wc, "merge", "-q", "--no-ff", "-m", "merge", "side")
			commit(t, wc, "after merge")
		}},
	} {
		old := git(t, wc, "rev-parse", "HEAD")
		tc.make()
		tip := git(t, wc, "rev-parse", "HEAD")
		git(t, wc, "push", "-q", "origin", "main")
		want, _ := strconv.Atoi(git(t, bare, "rev-list", "--count", old+".."+tip))
		u := enrichOne(t, r, bus.RefUpdate{Ref: "refs/heads/main", Old: old, New: tip}, EnrichOptions{Budget: 5 * time.Second})
		if u.Enriched != bus.EnrichFull || u.Forced == nil || *u.Forced || u.Commits == nil || *u.Commits != want {
			t.Errorf("%s: forced %v commits %v, want false and %d (%+v)", tc.name, u.Forced, u.Commits, want, u)
		}
	}
}
