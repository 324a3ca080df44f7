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

// globRef is the obvious recursive glob matcher, exponential on hostile
// patterns but easy to trust: the fuzz targets check the matchers against
// it. A '*' matches any run of bytes, not '/' when noSlash.
func globRef(pat, s string, noSlash bool) bool {
	if pat == "" {
		return s == ""
	}
	if pat[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if globRef(pat[1:], s[i:], noSlash) {
				return true
			}
			if i < len(s) && noSlash && s[i] == '/' {
				return false
			}
		}
		return false
	}
	return s != "" && s[0] == pat[0] && globRef(pat[1:], s[1:], noSlash)
}

// matchSegsRef is the obvious recursive segment matcher.
func matchSegsRef(pat, name []string) bool {
	if len(pat) == 0 {
		return len(name) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(name); i++ {
			if matchSegsRef(pat[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	return len(name) > 0 && globRef(pat[0], name[0], true) && matchSegsRef(pat[1:], name[1:])
}

func FuzzRepoPatternReference(f *testing.F) {
	for _, s := range [][2]string{{"acme/**", "acme/a/b"}, {"**/app", "a/b/app"}, {"a/**/b/**/c", "a/x/b/y/b/c"}, {"**", "x"}, {"a/*/**", "a/b"}, {"a*b*c/**/x*", "aXbYc/q/xx"}, {"**/a*a*a/z", "b/aaaa/z"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, repo string) {
		p, err := ParseRepoPattern(pattern)
		if err != nil || ValidateRepo(repo) != nil {
			return
		}
		if got, want := p.Match(repo), matchSegsRef(strings.Split(pattern, "/"), strings.Split(repo, "/")); got != want {
			t.Fatalf("%q ~ %q: got %v, reference says %v", pattern, repo, got, want)
		}
	})
}

func FuzzRefPatternReference(f *testing.F) {
	for _, s := range [][2]string{{"refs/heads/*", "refs/heads/a/b"}, {"refs/*a*a*a", "refs/aaa"}, {"refs/*/x*y", "refs/q/xyxy"}, {"refs/*ab*ab", "refs/abab"}, {"refs/heads/main", "refs/heads/main"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, ref string) {
		p, err := ParseRefPattern(pattern)
		if err != nil || len(ref) > 300 {
			return
		}
		if got, want := p.Match(ref), globRef(p.raw, ref, false); got != want {
			t.Fatalf("%q ~ %q: got %v, reference says %v", p.raw, ref, got, want)
		}
	})
}

// TestPatternLimits: each limit refuses one past its value, accepts its
// value, and says which limit and what value.
func TestPatternLimits(t *testing.T) {
	stars := func(n int) string { return "refs/" + strings.Repeat("*a", n) }
	repoStars := func(n int) string { return strings.TrimSuffix(strings.Repeat("a*/", n), "/") }
	many := func(n int, v string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = v
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		repos, refs []string
		want        string // "" accepts
	}{
		{"wildcards at the limit", []string{repoStars(MaxWildcards)}, []string{stars(MaxWildcards)}, ""},
		{"ref wildcards", []string{"a"}, []string{stars(MaxWildcards + 1)}, "at most 8 allowed (limit: wildcards per pattern)"},
		{"star runs count once", []string{"a"}, []string{"refs/" + strings.Repeat("**a", MaxWildcards)}, ""},
		{"repo wildcards", []string{repoStars(MaxWildcards + 1)}, nil, "at most 8 allowed (limit: wildcards per pattern)"},
		{"double star counts", []string{strings.Repeat("**/", MaxWildcards) + "x"}, nil, ""},
		{"double star past", []string{strings.Repeat("**/", MaxWildcards+1) + "x"}, nil, "limit: wildcards per pattern"},
		{"ref pattern length", []string{"a"}, []string{"refs/" + strings.Repeat("x", MaxRefPatternLen)}, "at most 256 allowed (limit: ref pattern length)"},
		{"ref pattern at length", []string{"a"}, []string{"refs/" + strings.Repeat("x", MaxRefPatternLen-5)}, ""},
		{"repo pattern length", []string{strings.Repeat("a/", 128)}, nil, "at most 255 allowed (limit: repo pattern length)"},
		{"repos", many(MaxReposPerFilter+1, "a"), nil, "at most 64 per subscription (limit: repos per subscription)"},
		{"refs", []string{"a"}, many(MaxPatternsPerFilter+1, "refs/x"), "at most 64 per subscription (limit: ref patterns per subscription)"},
		{"bytes", many(MaxReposPerFilter, strings.Repeat("a", MaxFilterBytes/MaxReposPerFilter)), []string{"refs/x"}, "at most 2048 per subscription (limit: filter bytes)"},
		{"segments between double stars", []string{"**/" + strings.Repeat("a/", MaxSegmentsBetweenDoubleStars) + "**"}, nil, ""},
		{"segments between double stars past", []string{"**/" + strings.Repeat("a/", MaxSegmentsBetweenDoubleStars+1) + "**"}, nil, "at most 4 allowed (limit: segments between '**')"},
		{"long runs before and after", []string{strings.Repeat("a/", 20) + "**/" + strings.Repeat("a/", 20) + "b"}, nil, ""},
		{"bytes at the limit", many(MaxReposPerFilter, strings.Repeat("a", MaxFilterBytes/MaxReposPerFilter)), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFilter(tc.repos, tc.refs)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatal("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not say %q", err, tc.want)
			case err != nil && !errors.Is(err, ErrInvalid):
				t.Fatalf("error %v is not ErrInvalid", err)
			}
		})
	}
}

// worstFilter is the costliest filter ParseFilter accepts, as far as a
// client can choose: as many globs as the byte budget holds, each with
// the longest run between two "**" and a ref pattern of the most stars,
// all failing as late as they can.
func worstFilter(tb testing.TB) Filter {
	tb.Helper()
	repo := "**/" + strings.Repeat("a/", MaxSegmentsBetweenDoubleStars-1) + "b/**"
	ref := "refs/" + strings.Repeat("*a", MaxWildcards-1) + "*b"
	var repos, refs []string
	// The last repo glob matches, so every ref pattern is tried too.
	for n := len("**"); len(repos) < MaxReposPerFilter-1 && n+len(repo)+len(ref) <= MaxFilterBytes; n += len(repo) + len(ref) {
		repos, refs = append(repos, repo), append(refs, ref)
	}
	repos = append(repos, "**")
	f, err := ParseFilter(repos, refs)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// BenchmarkFilterWorst matches events against the worst accepted filter:
// what one hostile stream costs the node per event. The repo name decides
// how long a match walks, and publishers choose it, not subscribers:
// "typical" is a three-segment name, "deepest" the deepest the bus takes
// (127 segments of "a", which every run almost matches).
func BenchmarkFilterWorst(b *testing.B) {
	f := worstFilter(b)
	for _, tc := range []struct {
		name string
		ev   Event
	}{
		{"typical", Event{Repo: "acme/team/app", Ref: "refs/heads/feature/" + strings.Repeat("a", 40)}},
		{"deepest", Event{Repo: strings.TrimSuffix(strings.Repeat("a/", MaxRepoLen/2), "/"), Ref: "refs/" + strings.Repeat("a", MaxRefLen-5)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if f.Match(&tc.ev) {
					b.Fatal("matched")
				}
			}
		})
	}
}
