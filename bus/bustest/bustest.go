// Package bustest is the conformance suite every bus.Bus implementation
// runs: the same behaviour, checked the same way, for the memory bus and the
// Redis bus. An implementation's test calls Run with a factory.
//
// It is not a place for implementation details (fault injection, key
// layout): those tests live with their implementation.
package bustest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

// Options are what a subtest needs of the bus it asks the factory for.
// Zero values mean the implementation's defaults.
type Options struct {
	Partitions int
	History    int           // events retained per partition
	MaxAge     time.Duration // 0 trims by count only
}

// Factory returns a fresh, empty bus with the options; it should close the
// bus in t.Cleanup (closing twice must be safe: some subtests close it).
type Factory func(t *testing.T, opts Options) bus.Bus

// Run runs every conformance subtest against buses from factory. Subtests
// run in parallel, each on its own bus.
func Run(t *testing.T, factory Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, f Factory)
	}{
		{"PublishPositions", testPublishPositions},
		{"PublishInvalid", testPublishInvalid},
		{"IdempotentPushID", testIdempotent},
		{"HistoryRangeLimit", testHistoryRange},
		{"HistoryTruncatedAfterTrim", testTruncated},
		{"HistoryWrongEpoch", testWrongEpoch},
		{"HistoryMaxAge", testMaxAge},
		{"RefState", testRefState},
		{"SeedReplacesState", testSeed},
		{"SeedLargerThanAPush", testLargeSeed},
		{"Repos", testRepos},
		{"GitState", testGitState},
		{"Heads", testHeads},
		{"Chains", testChains},
		{"SubscribeExactlyOnceInOrder", testSubscribeExact},
		{"SubscribeReplaysFromPosition", testSubscribeReplay},
		{"SubscribeStaleEpochResets", testSubscribeOtherEpoch},
		{"SubscribeTrimmedResets", testSubscribeTrimmed},
		{"SubscribeAheadResets", testSubscribeAhead},
		{"SubscribeWrongPartitionCount", testSubscribeWrongCount},
		{"SubscriptionCloseAndCancel", testSubscriptionClose},
		{"CloseEndsSubscriptions", testCloseEnds},
		{"CloseWaitsForSubscriptions", testCloseWaits},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, factory)
		})
	}
}

// Wait is how long a subtest waits for a message that should come.
const Wait = 15 * time.Second

var t0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

// ID returns a distinct 40-hex object id for n (n > 0).
func ID(n int) string { return fmt.Sprintf("%040x", n) }

// Push builds a valid push of ref updates: pairs of ref and new id, "" as
// new deletes (old is always ID(999999)).
func Push(id, repo string, refsAndNew ...string) *bus.Push {
	p := &bus.Push{ID: id, Repo: repo, Pusher: "alice", Time: time.Now().UTC().Truncate(time.Millisecond), Source: "api"}
	for i := 0; i+1 < len(refsAndNew); i += 2 {
		u := bus.RefUpdate{Ref: refsAndNew[i], Old: ID(999999), New: refsAndNew[i+1]}
		if u.New == "" {
			u.New = bus.ZeroSHA1
		}
		p.Updates = append(p.Updates, u)
	}
	return p
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*Wait)
	t.Cleanup(cancel)
	return c
}

func mustPublish(t *testing.T, b bus.Bus, p *bus.Push) []bus.Event {
	t.Helper()
	evs, err := b.Publish(ctx(t), p)
	if err != nil {
		t.Fatalf("Publish(%s): %v", p.ID, err)
	}
	return evs
}

func mustHeads(t *testing.T, b bus.Bus) bus.Heads {
	t.Helper()
	h, err := b.Heads(ctx(t))
	if err != nil {
		t.Fatalf("Heads: %v", err)
	}
	return h
}

// repoIn returns a repo name, distinct per n, that lands in partition pi.
func repoIn(pi, parts, n int) string {
	for i := 0; ; i++ {
		r := fmt.Sprintf("acme/r%d-%d", n, i)
		if bus.PartitionOf(r, parts) == pi {
			return r
		}
	}
}

// same compares events by their JSON and position.
func same(a, b bus.Event) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb) && a.Partition == b.Partition && a.Seq == b.Seq
}

func describe(evs []bus.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("%d/%d %s %s", e.Partition, e.Seq, e.PushID, e.Ref))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func testPublishPositions(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 4})
	repo := "acme/app"
	pi := bus.PartitionOf(repo, 4)
	p := Push("p1", repo, "refs/heads/main", ID(1), "refs/heads/dev", ID(2), "refs/tags/v1", "")
	p.Updates[0].Old = bus.ZeroSHA1 // a create
	evs := mustPublish(t, b, p)
	if len(evs) != 3 {
		t.Fatalf("got %d events, want 3", len(evs))
	}
	wantKinds := []bus.Kind{bus.KindCreate, bus.KindUpdate, bus.KindDelete}
	for i, e := range evs {
		if e.Partition != pi || e.Seq != uint64(i+1) || e.Kind != wantKinds[i] || e.Repo != repo || e.PushID != "p1" || e.V != bus.SchemaVersion {
			t.Errorf("event %d = %+v; want partition %d seq %d kind %s", i, e, pi, i+1, wantKinds[i])
		}
	}
	evs2 := mustPublish(t, b, Push("p2", repo, "refs/heads/main", ID(3)))
	if evs2[0].Seq != 4 {
		t.Errorf("second push seq = %d, want 4 (dense)", evs2[0].Seq)
	}
	h := mustHeads(t, b)
	got, err := b.History(ctx(t), pi, h[pi].Epoch, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := append(evs, evs2...)
	if len(got) != len(want) {
		t.Fatalf("history = %s, want %s", describe(got), describe(want))
	}
	for i := range want {
		if !same(got[i], want[i]) || !got[i].Time.Equal(want[i].Time) {
			t.Errorf("history[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func testPublishInvalid(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	for name, p := range map[string]*bus.Push{
		"no updates": Push("p1", "acme/app"),
		"bad repo":   Push("p2", "../etc", "refs/heads/main", ID(1)),
		"bad ref":    Push("p3", "acme/app", "refs/heads/a..b", ID(1)),
		"bad id":     Push("p 4", "acme/app", "refs/heads/main", ID(1)),
	} {
		if _, err := b.Publish(ctx(t), p); !errors.Is(err, bus.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	h := mustHeads(t, b)
	for i, ph := range h {
		if ph.Last != 0 {
			t.Errorf("partition %d has %d events after invalid pushes", i, ph.Last)
		}
	}
}

func testIdempotent(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	repo := "acme/app"
	pi := bus.PartitionOf(repo, 2)
	mustPublish(t, b, Push("before", repo, "refs/heads/x", ID(9)))
	p := Push("dup", repo, "refs/heads/main", ID(1), "refs/heads/dev", ID(2))
	first := mustPublish(t, b, p)
	again := mustPublish(t, b, p)
	if len(again) != len(first) {
		t.Fatalf("republish returned %d events, want %d", len(again), len(first))
	}
	for i := range first {
		if again[i].Seq != first[i].Seq || again[i].Partition != first[i].Partition {
			t.Errorf("republish event %d at %d/%d, first at %d/%d", i, again[i].Partition, again[i].Seq, first[i].Partition, first[i].Seq)
		}
	}
	h := mustHeads(t, b)
	if h[pi].Last != 3 {
		t.Errorf("head after republish = %d, want 3 (nothing appended)", h[pi].Last)
	}
	next := mustPublish(t, b, Push("after", repo, "refs/heads/main", ID(3)))
	if next[0].Seq != 4 {
		t.Errorf("next push seq = %d, want 4", next[0].Seq)
	}
}

func testHistoryRange(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 1})
	for i := 1; i <= 10; i++ {
		mustPublish(t, b, Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", ID(i)))
	}
	ep := mustHeads(t, b)[0].Epoch
	cases := []struct {
		name         string
		after        uint64
		limit        int
		first, count int
	}{
		{"from start", 0, 100, 1, 10},
		{"middle with limit", 3, 4, 4, 4},
		{"tail", 8, 100, 9, 2},
		{"at head", 10, 100, 0, 0},
		{"ahead", 50, 100, 0, 0},
		{"limit one", 0, 1, 1, 1},
	}
	for _, c := range cases {
		got, err := b.History(ctx(t), 0, ep, c.after, c.limit)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if len(got) != c.count {
			t.Errorf("%s: got %s, want %d events", c.name, describe(got), c.count)
			continue
		}
		for i, e := range got {
			if e.Seq != uint64(c.first+i) || e.Ref != "refs/heads/main" || e.New != ID(c.first+i) {
				t.Errorf("%s: event %d = %d %s", c.name, i, e.Seq, e.New)
			}
		}
	}
	if _, err := b.History(ctx(t), 1, ep, 0, 10); !errors.Is(err, bus.ErrInvalid) {
		t.Errorf("partition out of range: err = %v, want ErrInvalid", err)
	}
}

func testTruncated(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 1, History: 5})
	for i := 1; i <= 8; i++ {
		mustPublish(t, b, Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", ID(i)))
	}
	h := mustHeads(t, b)[0]
	if h.First != 4 || h.Last != 8 {
		t.Fatalf("head = %+v, want First 4 Last 8", h)
	}
	if _, err := b.History(ctx(t), 0, h.Epoch, 2, 10); !errors.Is(err, bus.ErrTruncated) {
		t.Errorf("after 2: err = %v, want ErrTruncated", err)
	}
	got, err := b.History(ctx(t), 0, h.Epoch, 3, 10)
	if err != nil || len(got) != 5 || got[0].Seq != 4 {
		t.Errorf("after 3: %s, %v; want seqs 4..8", describe(got), err)
	}
	// A push bigger than the history keeps only its last events.
	p := Push("big", "acme/app")
	for i := range 7 {
		p.Updates = append(p.Updates, bus.RefUpdate{Ref: fmt.Sprintf("refs/heads/b%d", i), Old: bus.ZeroSHA1, New: ID(100 + i)})
	}
	mustPublish(t, b, p)
	if h := mustHeads(t, b)[0]; h.First != 11 || h.Last != 15 {
		t.Errorf("head after a big push = %+v, want First 11 Last 15", h)
	}
}

func testWrongEpoch(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 1})
	mustPublish(t, b, Push("p1", "acme/app", "refs/heads/main", ID(1)))
	h := mustHeads(t, b)[0]
	if _, err := b.History(ctx(t), 0, h.Epoch+1, 0, 10); !errors.Is(err, bus.ErrTruncated) {
		t.Errorf("other epoch: err = %v, want ErrTruncated", err)
	}
	if _, err := b.History(ctx(t), 0, 0, 0, 10); !errors.Is(err, bus.ErrTruncated) {
		t.Errorf("epoch 0: err = %v, want ErrTruncated", err)
	}
}

func testMaxAge(t *testing.T, f Factory) {
	const age = 300 * time.Millisecond
	b := f(t, Options{Partitions: 1, MaxAge: age})
	mustPublish(t, b, Push("old1", "acme/app", "refs/heads/main", ID(1)))
	mustPublish(t, b, Push("old2", "acme/app", "refs/heads/main", ID(2)))
	time.Sleep(age + 100*time.Millisecond)
	mustPublish(t, b, Push("new", "acme/app", "refs/heads/main", ID(3)))
	h := mustHeads(t, b)[0]
	if h.First != 3 || h.Last != 3 {
		t.Errorf("head = %+v, want First 3 Last 3 (older events aged out)", h)
	}
	if _, err := b.History(ctx(t), 0, h.Epoch, 0, 10); !errors.Is(err, bus.ErrTruncated) {
		t.Errorf("history from 0: err = %v, want ErrTruncated", err)
	}
}

func testRefState(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 4})
	repo := "acme/app"
	mustPublish(t, b, Push("p1", repo, "refs/heads/main", ID(1), "refs/heads/dev", ID(2), "refs/tags/v1", ID(3)))
	evs := mustPublish(t, b, Push("p2", repo, "refs/heads/main", ID(4), "refs/heads/dev", ""))
	mustPublish(t, b, Push("other", "acme/other", "refs/heads/main", ID(5)))
	st, err := b.Refs(ctx(t), repo)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"refs/heads/main": ID(4), "refs/tags/v1": ID(3)}
	if !mapsEqual(st.Refs, want) {
		t.Errorf("refs = %v, want %v", st.Refs, want)
	}
	h := mustHeads(t, b)
	pi := bus.PartitionOf(repo, 4)
	if st.Repo != repo || st.Partition != pi || st.Epoch != h[pi].Epoch || st.Seq != h[pi].Last || st.Seq < evs[1].Seq {
		t.Errorf("state position = %s p%d epoch %d seq %d; want p%d epoch %d seq %d", st.Repo, st.Partition, st.Epoch, st.Seq, pi, h[pi].Epoch, h[pi].Last)
	}
	unknown, err := b.Refs(ctx(t), "acme/unknown")
	if err != nil || len(unknown.Refs) != 0 || unknown.Refs == nil {
		t.Errorf("unknown repo: %+v, %v; want empty non-nil refs", unknown, err)
	}
	if _, err := b.Refs(ctx(t), "bad repo"); !errors.Is(err, bus.ErrInvalid) {
		t.Errorf("bad repo: err = %v, want ErrInvalid", err)
	}
}

func testSeed(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	repo := "acme/app"
	mustPublish(t, b, Push("p1", repo, "refs/heads/main", ID(1), "refs/heads/old", ID(2)))
	seed := &bus.Push{ID: "seed1", Repo: repo, Time: t0, Source: "sync", Seed: true, Updates: []bus.RefUpdate{
		{Ref: "refs/heads/main", New: ID(10)},
		{Ref: "refs/heads/new", New: ID(11)},
		{Ref: "refs/tags/v2", New: ID(12)},
	}}
	evs := mustPublish(t, b, seed)
	if len(evs) != 1 || evs[0].Kind != bus.KindSync || evs[0].Refs != 3 || evs[0].Seq != 3 {
		t.Fatalf("seed events = %+v, want one sync event with refs 3 at seq 3", evs)
	}
	st, err := b.Refs(ctx(t), repo)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"refs/heads/main": ID(10), "refs/heads/new": ID(11), "refs/tags/v2": ID(12)}
	if !mapsEqual(st.Refs, want) {
		t.Errorf("after seed refs = %v, want %v", st.Refs, want)
	}
	// An empty seed empties the state: the repo no longer has state.
	mustPublish(t, b, &bus.Push{ID: "seed2", Repo: repo, Time: t0, Seed: true})
	st, err = b.Refs(ctx(t), repo)
	if err != nil || len(st.Refs) != 0 {
		t.Errorf("after empty seed refs = %v, %v; want none", st.Refs, err)
	}
	if repos, _ := b.Repos(ctx(t)); slices.Contains(repos, repo) {
		t.Errorf("repos after empty seed = %v, should not list %s", repos, repo)
	}
}

// testLargeSeed: a seed may carry more refs than a push
// (bus.MaxUpdatesPerPush, up to bus.MaxRefsPerSeed) and replaces the state
// as one, peels and completeness included.
func testLargeSeed(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	repo := "acme/big"
	n := bus.MaxUpdatesPerPush + 5000
	mustPublish(t, b, Push("p1", repo, "refs/heads/gone", ID(1)))
	ups := make([]bus.RefUpdate, n)
	for i := range ups {
		ups[i] = bus.RefUpdate{Ref: fmt.Sprintf("refs/heads/b%06d", i), New: ID(i + 1)}
	}
	ups[n-1] = bus.RefUpdate{Ref: "refs/tags/v1", New: ID(1), Peeled: ID(2)}
	evs := mustPublish(t, b, &bus.Push{ID: "seed", Repo: repo, Time: t0, Source: "sync", Seed: true, Head: "refs/heads/b000000", Updates: ups})
	if len(evs) != 1 || evs[0].Kind != bus.KindSync || evs[0].Refs != n {
		t.Fatalf("seed events = %+v, want one sync event with refs %d", evs, n)
	}
	st, err := b.Refs(ctx(t), repo)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Refs) != n || st.Refs["refs/heads/gone"] != "" || st.Refs["refs/heads/b000007"] != ID(8) ||
		!st.Complete || st.Peeled["refs/tags/v1"] != ID(2) {
		t.Errorf("after a %d-ref seed: %d refs, gone %q, complete %v, peel %q", n, len(st.Refs), st.Refs["refs/heads/gone"], st.Complete, st.Peeled["refs/tags/v1"])
	}
	over := &bus.Push{ID: "over", Repo: repo, Time: t0, Seed: true, Updates: make([]bus.RefUpdate, bus.MaxRefsPerSeed+1)}
	if _, err := b.Publish(ctx(t), over); !errors.Is(err, bus.ErrInvalid) {
		t.Errorf("seed of %d refs: %v, want ErrInvalid", bus.MaxRefsPerSeed+1, err)
	}
}

// testGitState checks HEAD's target, tag peels and completeness
// (bus.GitFields) through seeds and pushes with and without Head.
func testGitState(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	repo := "acme/git"
	check := func(step, head string, complete bool, peeled map[string]string) {
		t.Helper()
		st, err := b.Refs(ctx(t), repo)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if st.Head != head || st.Complete != complete || !mapsEqual(st.Peeled, peeled) {
			t.Errorf("%s: head %q complete %v peeled %v; want %q %v %v", step, st.Head, st.Complete, st.Peeled, head, complete, peeled)
		}
		for ref := range st.Refs {
			if bus.IsGitField(ref) {
				t.Errorf("%s: reserved field %q listed as a ref", step, ref)
			}
		}
		// The cheap question a hook asks after each push agrees.
		if gc, ok := b.(interface {
			GitComplete(context.Context, string) (bool, error)
		}); ok {
			if got, err := gc.GitComplete(ctx(t), repo); err != nil || got != complete {
				t.Errorf("%s: GitComplete = %v, %v; want %v", step, got, err, complete)
			}
		}
	}
	// A push, even with Head, cannot vouch for refs refcast never saw.
	p := Push("p1", repo, "refs/heads/main", ID(1))
	p.Head = "refs/heads/main"
	mustPublish(t, b, p)
	check("first push", "refs/heads/main", false, map[string]string{})

	seed := &bus.Push{ID: "seed", Repo: repo, Time: t0, Source: "sync", Seed: true, Head: "refs/heads/dev", Updates: []bus.RefUpdate{
		{Ref: "refs/heads/dev", New: ID(2)},
		{Ref: "refs/tags/light", New: ID(2)},
		{Ref: "refs/tags/v1", New: ID(3), Peeled: ID(2)},
	}}
	mustPublish(t, b, seed)
	check("seed", "refs/heads/dev", true, map[string]string{"refs/tags/v1": ID(2)})

	// A push with Head keeps it complete: a new annotated tag, a moved
	// one made lightweight, HEAD moved by git symbolic-ref.
	p = Push("p2", repo, "refs/tags/v2", ID(4), "refs/tags/v1", ID(5))
	p.Updates[0].Peeled = ID(2)
	p.Updates[1].Old = ID(3)
	p.Head = "refs/heads/main"
	mustPublish(t, b, p)
	check("push with head", "refs/heads/main", true, map[string]string{"refs/tags/v2": ID(2)})

	p = &bus.Push{ID: "p3", Repo: repo, Time: t0, Head: "refs/heads/main", Updates: []bus.RefUpdate{{Ref: "refs/tags/v2", Old: ID(4), New: bus.ZeroSHA1}}}
	mustPublish(t, b, p)
	check("tag deleted", "refs/heads/main", true, map[string]string{})

	// A push without Head (an older hook) may leave a tag unpeeled.
	mustPublish(t, b, Push("p4", repo, "refs/tags/v3", ID(6)))
	check("push without head", "refs/heads/main", false, map[string]string{})
	p = Push("p5", repo, "refs/heads/x", ID(7))
	p.Head = "refs/heads/main"
	mustPublish(t, b, p)
	check("only a seed restores", "refs/heads/main", false, map[string]string{})

	// No refs, no state: the fields go too, and a later push starts over.
	mustPublish(t, b, &bus.Push{ID: "empty", Repo: repo, Time: t0, Seed: true, Head: "refs/heads/main"})
	if repos, _ := b.Repos(ctx(t)); slices.Contains(repos, repo) {
		t.Errorf("repos after empty seed = %v, should not list %s", repos, repo)
	}
	mustPublish(t, b, Push("p6", repo, "refs/heads/main", ID(8)))
	check("after empty seed", "", false, map[string]string{})

	// A whole push (a new repository's first push, as the hook sees it)
	// replaces the state like a seed, old refs and fields included, and
	// makes it complete; subscribers see it as the push it is.
	whole := &bus.Push{ID: "whole", Repo: repo, Time: t0, Source: "post-receive", Whole: true, Head: "refs/heads/trunk", Updates: []bus.RefUpdate{
		{Ref: "refs/heads/trunk", Old: bus.ZeroSHA1, New: ID(10)},
		{Ref: "refs/tags/w1", Old: bus.ZeroSHA1, New: ID(11), Peeled: ID(10)},
	}}
	evs := mustPublish(t, b, whole)
	check("whole push", "refs/heads/trunk", true, map[string]string{"refs/tags/w1": ID(10)})
	if st, _ := b.Refs(ctx(t), repo); len(st.Refs) != 2 || st.Refs["refs/heads/main"] != "" {
		t.Errorf("whole push: refs %v, want only trunk and w1", st.Refs)
	}
	if len(evs) != 2 || evs[0].Kind != bus.KindCreate || evs[1].Kind != bus.KindCreate {
		t.Errorf("whole push announced as %+v, want two create events", evs)
	}
	for _, w := range []*bus.Push{
		{ID: "whole-seed", Repo: repo, Time: t0, Whole: true, Seed: true, Head: "refs/heads/trunk", Updates: []bus.RefUpdate{{Ref: "refs/heads/trunk", New: ID(10)}}},
		{ID: "whole-update", Repo: repo, Time: t0, Whole: true, Head: "refs/heads/trunk", Updates: []bus.RefUpdate{{Ref: "refs/heads/trunk", Old: ID(10), New: ID(12)}}},
	} {
		if _, err := b.Publish(ctx(t), w); !errors.Is(err, bus.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", w.ID, err)
		}
	}

	bad := Push("bad", repo, "refs/heads/main", ID(9))
	bad.Head = "HEAD"
	if _, err := b.Publish(ctx(t), bad); !errors.Is(err, bus.ErrInvalid) {
		t.Errorf("head %q: err = %v, want ErrInvalid", bad.Head, err)
	}
}

func testRepos(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 4})
	if repos, err := b.Repos(ctx(t)); err != nil || len(repos) != 0 {
		t.Fatalf("empty bus: repos = %v, %v", repos, err)
	}
	names := []string{"zeta/z", "acme/app", "acme/lib", "beta/x.y", "acme/app-2"}
	for i, r := range names {
		mustPublish(t, b, Push(fmt.Sprintf("p%d", i), r, "refs/heads/main", ID(i+1)))
	}
	mustPublish(t, b, Push("del", "acme/lib", "refs/heads/main", "")) // no refs left
	got, err := b.Repos(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"acme/app", "acme/app-2", "beta/x.y", "zeta/z"}
	if !slices.Equal(got, want) {
		t.Errorf("repos = %v, want %v", got, want)
	}
}

func testHeads(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 3})
	if b.Partitions() != 3 {
		t.Fatalf("Partitions() = %d, want 3", b.Partitions())
	}
	h1 := mustHeads(t, b)
	if len(h1) != 3 {
		t.Fatalf("len(heads) = %d, want 3", len(h1))
	}
	for i, h := range h1 {
		if h.Epoch == 0 || h.First != 1 || h.Last != 0 {
			t.Errorf("fresh partition %d head = %+v, want epoch != 0, First 1, Last 0", i, h)
		}
	}
	repo := repoIn(1, 3, 0)
	mustPublish(t, b, Push("p1", repo, "refs/heads/a", ID(1), "refs/heads/b", ID(2)))
	h2 := mustHeads(t, b)
	for i := range h2 {
		if h2[i].Epoch != h1[i].Epoch {
			t.Errorf("partition %d epoch changed %d -> %d", i, h1[i].Epoch, h2[i].Epoch)
		}
	}
	if h2[1].First != 1 || h2[1].Last != 2 || h2[0].Last != 0 || h2[2].Last != 0 {
		t.Errorf("heads after publish = %+v", h2)
	}
}

// testChains: every event carries the chain of the history before it and
// up to it (bus.ChainNext over the push ids from the epoch's start, so
// every implementation, the Redis scripts included, computes the same
// values), in History, in a subscription and in the heads.
func testChains(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	repo := repoIn(1, 2, 0)
	start := mustHeads(t, b)
	if start[1].Chain != 0 {
		t.Fatalf("fresh partition has chain %x", start[1].Chain)
	}
	sub, err := b.Subscribe(ctx(t), start)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	mustPublish(t, b, Push("c1", repo, "refs/heads/a", ID(1), "refs/heads/b", ID(2)))
	mustPublish(t, b, Push("c2", repo, "refs/heads/a", ID(3)))
	want := []uint64{0}
	for _, id := range []string{"c1", "c1", "c2"} {
		want = append(want, bus.ChainNext(want[len(want)-1], id))
	}
	check := func(where string, evs []bus.Event) {
		t.Helper()
		if len(evs) != 3 {
			t.Fatalf("%s: %d events, want 3", where, len(evs))
		}
		for i, e := range evs {
			if e.Prev != want[i] || e.Chain != want[i+1] {
				t.Errorf("%s: event %d has prev %x chain %x, want %x %x", where, e.Seq, e.Prev, e.Chain, want[i], want[i+1])
			}
		}
	}
	h := mustHeads(t, b)
	evs, err := b.History(ctx(t), 1, h[1].Epoch, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	check("history", evs)
	check("subscription", collect(t, sub, start, 3))
	if h[1].Chain != want[3] {
		t.Errorf("head chain %x, want %x", h[1].Chain, want[3])
	}
	if st, err := b.Refs(ctx(t), repo); err != nil || st.Seq != 3 || st.Chain != want[3] {
		t.Errorf("refs = seq %d chain %x, %v; want seq 3 chain %x", st.Seq, st.Chain, err, want[3])
	}
	// A duplicate publish changes nothing.
	mustPublish(t, b, Push("c2", repo, "refs/heads/a", ID(3)))
	if h2 := mustHeads(t, b); h2[1].Chain != want[3] {
		t.Errorf("head chain after a duplicate %x, want %x", h2[1].Chain, want[3])
	}
	if fixed := bus.ChainNext(0, "p"); fixed != 0xc2f26cf0d7c959ad {
		t.Errorf("ChainNext(0, \"p\") = %x: the function changed, and with it every stored chain", fixed)
	}
}

// collect reads from sub until n events arrived, failing on a Reset or a
// timeout. It checks each partition's seqs continue without gaps from
// start.
func collect(t *testing.T, sub bus.Subscription, start bus.Heads, n int) []bus.Event {
	t.Helper()
	next := make([]uint64, len(start))
	for i, h := range start {
		next[i] = h.Last + 1
	}
	var got []bus.Event
	timeout := time.After(Wait)
	for len(got) < n {
		select {
		case m, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription closed after %d of %d events", len(got), n)
			}
			if m.Reset {
				t.Fatalf("unexpected reset %+v after %d events", m, len(got))
			}
			for _, e := range m.Events {
				if e.Partition != m.Partition || e.Seq != next[e.Partition] {
					t.Fatalf("got event %d/%d in message of partition %d, want seq %d", e.Partition, e.Seq, m.Partition, next[e.Partition])
				}
				next[e.Partition]++
				got = append(got, e)
			}
		case <-timeout:
			t.Fatalf("got %d of %d events within %v", len(got), n, Wait)
		}
	}
	return got
}

func testSubscribeExact(t *testing.T, f Factory) {
	const parts, publishers, pushes = 4, 4, 25
	b := f(t, Options{Partitions: parts})
	from := mustHeads(t, b)
	sub, err := b.Subscribe(ctx(t), from)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	published := map[string][]bus.Event{} // push id -> events
	for w := range publishers {
		wg.Go(func() {
			for i := range pushes {
				repo := repoIn((w+i)%parts, parts, w)
				p := Push(fmt.Sprintf("w%d-%d", w, i), repo, "refs/heads/main", ID(w*1000+i+1), "refs/heads/dev", ID(w*1000+i+500))
				evs, err := b.Publish(ctx(t), p)
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				mu.Lock()
				published[p.ID] = evs
				mu.Unlock()
			}
		})
	}
	got := collect(t, sub, from, publishers*pushes*2)
	wg.Wait()
	seen := map[[2]uint64]bool{}
	for _, e := range got {
		evs := published[e.PushID]
		var match bool
		for _, w := range evs {
			match = match || same(e, w)
		}
		if !match {
			t.Errorf("received event %d/%d of push %s does not match what Publish returned", e.Partition, e.Seq, e.PushID)
		}
		k := [2]uint64{uint64(e.Partition), e.Seq}
		if seen[k] {
			t.Errorf("event %v received twice", k)
		}
		seen[k] = true
	}
	// Nothing more arrives.
	select {
	case m := <-sub.C():
		t.Errorf("extra message %+v", m)
	case <-time.After(100 * time.Millisecond):
	}
}

func testSubscribeReplay(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	repo := repoIn(0, 2, 0)
	for i := 1; i <= 5; i++ {
		mustPublish(t, b, Push(fmt.Sprintf("p%d", i), repo, "refs/heads/main", ID(i)))
	}
	from := mustHeads(t, b)
	from[0].Last, from[0].Chain = 2, 0 // the chain at 2 is not the head's
	sub, err := b.Subscribe(ctx(t), from)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := collect(t, sub, from, 3)
	if got[0].New != ID(3) || got[2].New != ID(5) {
		t.Errorf("replay = %s, want events 3..5", describe(got))
	}
	mustPublish(t, b, Push("p6", repo, "refs/heads/main", ID(6)))
	from[0].Last = 5
	if got := collect(t, sub, from, 1); got[0].Seq != 6 {
		t.Errorf("live event after replay = %s", describe(got))
	}
}

// expectReset reads until a message for partition pi arrives and checks it
// is a Reset to the partition's current head.
func expectReset(t *testing.T, b bus.Bus, sub bus.Subscription, pi int) bus.PartitionHead {
	t.Helper()
	timeout := time.After(Wait)
	for {
		select {
		case m, ok := <-sub.C():
			if !ok {
				t.Fatal("subscription closed before reset")
			}
			if m.Partition != pi {
				continue
			}
			if !m.Reset || len(m.Events) != 0 {
				t.Fatalf("partition %d: got %+v, want a reset", pi, m)
			}
			if h := mustHeads(t, b)[pi]; m.Head != h {
				t.Errorf("reset head = %+v, want the current head %+v", m.Head, h)
			}
			return m.Head
		case <-timeout:
			t.Fatalf("no reset for partition %d within %v", pi, Wait)
		}
	}
}

func testSubscribeOtherEpoch(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	repo := repoIn(1, 2, 0)
	mustPublish(t, b, Push("p1", repo, "refs/heads/main", ID(1)))
	from := mustHeads(t, b)
	from[1].Epoch++ // a cursor from another life of the history
	sub, err := b.Subscribe(ctx(t), from)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	head := expectReset(t, b, sub, 1)
	mustPublish(t, b, Push("p2", repo, "refs/heads/main", ID(2)))
	from[1] = head
	if got := collect(t, sub, from, 1); got[0].PushID != "p2" {
		t.Errorf("after reset got %s, want p2", describe(got))
	}
}

func testSubscribeTrimmed(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 1, History: 3})
	from := mustHeads(t, b)
	for i := 1; i <= 6; i++ {
		mustPublish(t, b, Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", ID(i)))
	}
	sub, err := b.Subscribe(ctx(t), from) // wants seq 1, the history starts at 4
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if head := expectReset(t, b, sub, 0); head.Last != 6 {
		t.Errorf("reset head = %+v, want Last 6", head)
	}
}

func testSubscribeAhead(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 1})
	mustPublish(t, b, Push("p1", "acme/app", "refs/heads/main", ID(1)))
	from := mustHeads(t, b)
	from[0].Last, from[0].Chain = 10, 0 // a position this history never reached
	sub, err := b.Subscribe(ctx(t), from)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	expectReset(t, b, sub, 0)
}

func testSubscribeWrongCount(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	if _, err := b.Subscribe(ctx(t), make(bus.Heads, 3)); !errors.Is(err, bus.ErrInvalid) {
		t.Errorf("err = %v, want ErrInvalid", err)
	}
}

func waitClosed(t *testing.T, sub bus.Subscription) {
	t.Helper()
	timeout := time.After(Wait)
	for {
		select {
		case _, ok := <-sub.C():
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("subscription channel not closed")
		}
	}
}

func testSubscriptionClose(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	from := mustHeads(t, b)
	sub, err := b.Subscribe(ctx(t), from)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitClosed(t, sub)

	c, cancel := context.WithCancel(ctx(t))
	sub2, err := b.Subscribe(c, from)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	waitClosed(t, sub2)
	sub2.Close()

	// The bus still works.
	mustPublish(t, b, Push("p1", "acme/app", "refs/heads/main", ID(1)))
}

func testCloseEnds(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	from := mustHeads(t, b)
	sub, err := b.Subscribe(ctx(t), from)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, sub)
	sub.Close()
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checks := map[string]error{}
	_, checks["Publish"] = b.Publish(ctx(t), Push("p1", "acme/app", "refs/heads/main", ID(1)))
	_, checks["Subscribe"] = b.Subscribe(ctx(t), from)
	_, checks["Heads"] = b.Heads(ctx(t))
	_, checks["History"] = b.History(ctx(t), 0, from[0].Epoch, 0, 10)
	_, checks["Refs"] = b.Refs(ctx(t), "acme/app")
	_, checks["Repos"] = b.Repos(ctx(t))
	for name, err := range checks {
		if !errors.Is(err, bus.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// testCloseWaits checks that Bus.Close returns only after every
// subscription's goroutines have: a node closing its bus must not leave a
// feed running against a closed store. Subscriptions left open, one reading
// and two never read, are ended by Close alone. A subscription closes C as
// its last goroutine ends, so C must be closed the moment Close returns; a
// goroutine-leak check could not tell this from a feed that ends a moment
// later (goleak retries), and sees the parallel subtests' goroutines too.
// Each implementation's TestMain runs goleak over the whole package.
func testCloseWaits(t *testing.T, f Factory) {
	b := f(t, Options{Partitions: 2})
	from := mustHeads(t, b)
	var subs []bus.Subscription
	for range 3 {
		sub, err := b.Subscribe(ctx(t), from)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	if _, err := b.Publish(ctx(t), Push("p1", "acme/app", "refs/heads/main", ID(1))); err != nil {
		t.Fatal(err)
	}
	select { // the first is mid-feed: it has delivered and will be woken again
	case <-subs[0].C():
	case <-time.After(Wait):
		t.Fatal("no message before Close")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for i, sub := range subs {
		// The feed's goroutine closes C as it ends: after Close returned,
		// C must be closed already, with nothing more to deliver.
		select {
		case _, ok := <-sub.C():
			if ok {
				t.Errorf("subscription %d delivered after Bus.Close returned", i)
			}
		default:
			t.Errorf("subscription %d still running after Bus.Close returned", i)
		}
	}
	for _, sub := range subs {
		sub.Close()
	}
}
