package bus

import (
	"errors"
	"strings"
	"testing"
)

func TestRefPattern(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"refs/heads/*", []string{"refs/heads/main", "refs/heads/feature/x"}, []string{"refs/tags/v1", "refs/heads"}},
		{"refs/tags/v*", []string{"refs/tags/v1", "refs/tags/v2.0/rc"}, []string{"refs/tags/x1", "refs/heads/v1"}},
		{"refs/heads/release/**", []string{"refs/heads/release/1.0", "refs/heads/release/a/b"}, []string{"refs/heads/releases"}},
		{"refs/heads/main", []string{"refs/heads/main"}, []string{"refs/heads/main2", "refs/heads/mai"}},
		{"refs/*/main", []string{"refs/heads/main", "refs/remotes/origin/main"}, []string{"refs/heads/main/x"}},
		{"refs/heads/*-wip", []string{"refs/heads/a-wip"}, []string{"refs/heads/a-wip2"}},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			p, err := ParseRefPattern(tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.match {
				if !p.Match(r) {
					t.Errorf("%q should match %q", tc.pattern, r)
				}
			}
			for _, r := range tc.miss {
				if p.Match(r) {
					t.Errorf("%q should not match %q", tc.pattern, r)
				}
			}
		})
	}
	for _, bad := range []string{"", "heads/*", "refs/heads/[ab]", "refs/heads/a..*", "refs/heads/?", "^", "refs/heads/a b"} {
		if _, err := ParseRefPattern(bad); err == nil {
			t.Errorf("ParseRefPattern(%q) accepted", bad)
		}
	}
}

// TestRefPatternSuggestion: a short ref name is refused with the full
// name it most likely meant; a glob or a name that cannot be one gets none.
func TestRefPatternSuggestion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, pattern, want string // want "": no suggestion
	}{
		{"branch", "main", `did you mean "refs/heads/main"?`},
		{"nested branch", "feature/x", `did you mean "refs/heads/feature/x"?`},
		{"heads", "heads/main", `did you mean "refs/heads/main"?`},
		{"tag", "tags/v1.0", `did you mean "refs/tags/v1.0"?`},
		{"negated", "^pull/1", `did you mean "^refs/heads/pull/1"?`},
		{"glob", "*", ""},
		{"short glob", "heads/*", ""},
		{"HEAD", "HEAD", ""},
		{"not a ref either way", "a..b", ""},
		{"already under refs/", "refs/heads/a b", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRefPattern(tc.pattern)
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseRefPattern(%q) = %v, want ErrInvalid", tc.pattern, err)
			}
			if got := err.Error(); tc.want == "" && strings.Contains(got, "did you mean") || !strings.Contains(got, tc.want) {
				t.Errorf("ParseRefPattern(%q): %q, want suggestion %q", tc.pattern, got, tc.want)
			}
		})
	}
}

func TestRepoPattern(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"acme/app", []string{"acme/app"}, []string{"acme/app2", "acme"}},
		{"acme/*", []string{"acme/app", "acme/x"}, []string{"acme-evil/x", "acme/x/y", "acme"}},
		{"acme/**", []string{"acme/app", "acme/x/y", "acme"}, []string{"acme-evil/x", "acmeco/x"}},
		{"*/app", []string{"acme/app", "x/app"}, []string{"acme/app2", "a/b/app"}},
		{"acme/app-*", []string{"acme/app-1"}, []string{"acme/app", "acme/x-app-1"}},
		{"**/app", []string{"app", "a/app", "a/b/app"}, []string{"a/app/x"}},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			p, err := ParseRepoPattern(tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.match {
				if !p.Match(r) {
					t.Errorf("%q should match %q", tc.pattern, r)
				}
			}
			for _, r := range tc.miss {
				if p.Match(r) {
					t.Errorf("%q should not match %q", tc.pattern, r)
				}
			}
		})
	}
	for _, bad := range []string{"", "acme/**x", "acme//x", "../x", "acme/x y", "acme/x.git"} {
		if _, err := ParseRepoPattern(bad); err == nil {
			t.Errorf("ParseRepoPattern(%q) accepted", bad)
		}
	}
}

func TestFilter(t *testing.T) {
	t.Parallel()
	f, err := ParseFilter([]string{"acme/*"}, []string{"refs/heads/*", "^refs/heads/wip/*"})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(repo, ref string, k Kind) *Event { return &Event{Repo: repo, Ref: ref, Kind: k} }
	for _, tc := range []struct {
		e    *Event
		want bool
	}{
		{ev("acme/app", "refs/heads/main", KindUpdate), true},
		{ev("acme/app", "refs/heads/wip/x", KindUpdate), false},
		{ev("acme/app", "refs/tags/v1", KindCreate), false},
		{ev("other/app", "refs/heads/main", KindUpdate), false},
		{ev("acme/app", "", KindSync), true},
	} {
		if got := f.Match(tc.e); got != tc.want {
			t.Errorf("Match(%+v) = %v, want %v", *tc.e, got, tc.want)
		}
	}
	all, _ := ParseFilter([]string{"acme/app"}, nil)
	if !all.Match(ev("acme/app", "refs/notes/x", KindCreate)) {
		t.Error("no ref patterns should match every ref")
	}
	if _, err := ParseFilter(nil, nil); err == nil {
		t.Error("a filter without repos was accepted")
	}
	if _, err := ParseFilter([]string{"a"}, make([]string, MaxPatternsPerFilter+1)); err == nil {
		t.Error("too many patterns accepted")
	}
}

func FuzzRefPattern(f *testing.F) {
	for _, s := range [][2]string{{"refs/heads/*", "refs/heads/main"}, {"^refs/pull/*", "refs/pull/1/head"}, {"refs/tags/v*", "refs/tags/v1"}, {"refs/**/x", "refs/a/b/x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, ref string) {
		p, err := ParseRefPattern(pattern)
		if err != nil {
			return
		}
		m := p.Match(ref)
		// Without stars, matching is string equality.
		if !strings.Contains(p.raw, "*") && m != (ref == p.raw) {
			t.Fatalf("exact %q vs %q: %v", p.raw, ref, m)
		}
		// A match always starts with the literal prefix.
		if m && !strings.HasPrefix(ref, p.Prefix()) {
			t.Fatalf("%q matched %q without its prefix", p.raw, ref)
		}
		// Replacing each star by the same text yields a match.
		if filled := strings.ReplaceAll(p.raw, "*", "x/y"); !p.Match(filled) {
			t.Fatalf("%q does not match %q", p.raw, filled)
		}
	})
}

func FuzzRepoPattern(f *testing.F) {
	for _, s := range [][2]string{{"acme/*", "acme/app"}, {"acme/**", "acme/a/b"}, {"*/app", "x/app"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, repo string) {
		p, err := ParseRepoPattern(pattern)
		if err != nil {
			return
		}
		if p.Match(repo) && p.Exact() && repo != pattern {
			t.Fatalf("exact %q matched %q", pattern, repo)
		}
		// A single-segment star never crosses '/'.
		if !strings.Contains(pattern, "**") && p.Match(repo) && strings.Count(repo, "/") != strings.Count(pattern, "/") {
			t.Fatalf("%q matched %q across segments", pattern, repo)
		}
	})
}

// matchSegsRef is the obvious recursive matcher, exponential on hostile
// patterns but easy to trust: the fuzz target checks matchSegs against it.
func matchSegsRef(pat [][]string, name []string) bool {
	if len(pat) == 0 {
		return len(name) == 0
	}
	if pat[0] == nil {
		for i := 0; i <= len(name); i++ {
			if matchSegsRef(pat[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	return len(name) > 0 && globMatch(pat[0], name[0], true) && matchSegsRef(pat[1:], name[1:])
}

func FuzzRepoPatternReference(f *testing.F) {
	for _, s := range [][2]string{{"acme/**", "acme/a/b"}, {"**/app", "a/b/app"}, {"a/**/b/**/c", "a/x/b/y/b/c"}, {"**", "x"}, {"a/*/**", "a/b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, repo string) {
		p, err := ParseRepoPattern(pattern)
		if err != nil || ValidateRepo(repo) != nil || strings.Count(pattern, "**") > 6 {
			return
		}
		if got, want := p.Match(repo), matchSegsRef(p.segs, strings.Split(repo, "/")); got != want {
			t.Fatalf("%q ~ %q: got %v, reference says %v", pattern, repo, got, want)
		}
	})
}

// TestRepoPatternHostileIsFast: an exponential matcher would not finish
// this before the test timeout.
func TestRepoPatternHostileIsFast(t *testing.T) {
	p, err := ParseRepoPattern(strings.Repeat("**/", 40) + "zz")
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimSuffix(strings.Repeat("a/", 120), "/")
	if allocs := testing.AllocsPerRun(10, func() {
		if p.Match(name) {
			t.Fatal("matched")
		}
	}); allocs != 0 {
		t.Fatalf("Match allocates %v times", allocs)
	}
}
