package gitfront

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
)

func TestSnapshotView(t *testing.T) {
	st := &bus.RefState{Head: "refs/heads/main", Complete: true, Refs: map[string]string{
		"refs/heads/main": id('a'), "refs/heads/main2": id('b'), "refs/heads/dev": id('c'),
		"refs/tags/v1": id('d'), "refs/notes/x": id('e'),
	}, Peeled: map[string]string{"refs/tags/v1": id('a')}}
	s := newSnapshot(st)
	names := func(v *view) []string {
		var out []string
		for _, r := range v.refs {
			out = append(out, r.name)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		prefixes []string
		visible  func(string) bool
		want     []string
	}{
		{"all", nil, nil, []string{"refs/heads/dev", "refs/heads/main", "refs/heads/main2", "refs/notes/x", "refs/tags/v1"}},
		{"one branch", []string{"refs/heads/main"}, nil, []string{"refs/heads/main", "refs/heads/main2"}},
		{"overlapping prefixes listed once, in order", []string{"refs/tags/", "refs/heads/main", "refs/heads/"}, nil,
			[]string{"refs/heads/dev", "refs/heads/main", "refs/heads/main2", "refs/tags/v1"}},
		{"no match", []string{"refs/remotes/"}, nil, nil},
		{"hidden refs", []string{"refs/"}, func(r string) bool { return r != "refs/heads/main" }, []string{"refs/heads/dev", "refs/heads/main2", "refs/notes/x", "refs/tags/v1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := s.view(tc.visible, tc.prefixes)
			if got := names(v); !slices.Equal(got, tc.want) {
				t.Errorf("refs %q, want %q", got, tc.want)
			}
			if wantHead := tc.visible == nil; (v.headID == id('a')) != wantHead {
				t.Errorf("head %q %q shown: %v", v.head, v.headID, !wantHead)
			}
		})
	}
}

// TestSnapshotCache: a cached snapshot serves while its partition has not
// moved and is replaced after any publish; the bound on refs evicts the
// least recently used.
func TestSnapshotCache(t *testing.T) {
	b, err := memory.New(memory.Options{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	n := 0
	seed := func(repo string, refs int) {
		n++
		p := &bus.Push{ID: fmt.Sprint("s", n), Repo: repo, Time: time.Now(), Seed: true, Head: "refs/heads/b0"}
		for i := range refs {
			p.Updates = append(p.Updates, bus.RefUpdate{Ref: fmt.Sprint("refs/heads/b", i), New: id('a' + byte(n%6))})
		}
		if _, err := b.Publish(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	c := newSnapCache(b, 10)
	seed("acme/a", 4)
	s1, _ := c.get(ctx, b, "acme/a")
	if s2, _ := c.get(ctx, b, "acme/a"); s2 != s1 {
		t.Error("unchanged partition: snapshot rebuilt")
	}
	seed("acme/a", 5)
	s3, _ := c.get(ctx, b, "acme/a")
	if s3 == s1 || len(s3.refs) != 5 || s3.refs[0].id != id('a'+byte(n%6)) {
		t.Fatalf("after a publish: stale snapshot (%d refs)", len(s3.refs))
	}
	seed("acme/b", 4)
	c.get(ctx, b, "acme/b") // 9 refs held
	seed("acme/c", 3)
	c.get(ctx, b, "acme/c") // 12 > 10: acme/a, least recently used, goes
	c.mu.Lock()
	_, hasA := c.byID["acme/a"]
	held := c.refs
	c.mu.Unlock()
	if hasA || held != 7 {
		t.Errorf("after eviction: acme/a kept %v, %d refs held, want 7", hasA, held)
	}
	seed("acme/big", 11)
	if s, err := c.get(ctx, b, "acme/big"); err != nil || len(s.refs) != 11 {
		t.Fatalf("repo larger than the cache: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID["acme/big"]; ok || c.refs > 10 {
		t.Errorf("repo larger than the cache was kept (%d refs held)", c.refs)
	}
}
