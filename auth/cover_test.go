package auth

import (
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/refcast/refcast/bus"
)

var repoCoverCases = []struct {
	claim, sub string
	want       bool
}{
	{"acme/app", "acme/app", true},
	{"acme/app", "acme/ap", false},
	{"acme/app", "acme/*", false},
	{"acme/*", "acme/app", true},
	{"acme/*", "acme/*", true},
	{"acme/*", "acme/app-*", true},
	{"acme/*", "acme/*-x", true},
	{"acme/*", "acme/**", false},
	{"acme/*", "acme/x/y", false},
	{"acme/*", "acme-evil/x", false},
	{"acme/*", "acme", false},
	{"acme/*", "*", false},
	{"acme/*", "*/app", false},
	{"acme/*", "**", false},
	{"acme/app-*", "acme/*", false},
	{"acme/app-*", "acme/app-web", true},
	{"acme/app-*", "acme/app-*-x", true},
	{"acme/*-web", "acme/app-*", false},
	{"acme/a*b", "acme/a*b", true},
	{"acme/a*b", "acme/ab", true},
	{"acme/a*b", "acme/a*", false},
	{"acme/a*b*c", "acme/a*bxc", true},
	{"acme/a*b*c", "acme/ab*c", true},
	{"acme/a*b*c", "acme/a*c", false},
	{"acme/**", "acme/**", true},
	{"acme/**", "acme/*", true},
	{"acme/**", "acme/x/y/z", true},
	{"acme/**", "acme/*/**", true},
	{"acme/**", "acme", true},
	{"acme/**", "acme-evil/x", false},
	{"acme/**", "acme*/x", false},
	{"acme/**", "*/x", false},
	{"**", "**", true},
	{"**", "*/*/**", true},
	{"**", "x", true},
	{"*", "*", true},
	{"*", "**", false},
	{"*", "x/y", false},
	{"*/**", "**", false},
	{"*/**", "x/**", true},
	{"**/app", "acme/app", true},
	{"**/app", "acme/**/app", true},
	{"**/app", "**", false},
	{"**/app", "acme/app2", false},
	{"acme/**/app", "acme/app", true},
	{"acme/**/app", "acme/x/y/app", true},
	{"acme/**/app", "acme/**/*", false},
	{"acme/*/app", "acme/**/app", false},
	{"acme/*/app", "acme/x/app", true},
	{"**/**", "x/y", true},
	// Complete only where the subscription names one repo: equal languages
	// spelled differently are refused, which is safe.
	{"a/*/**", "a/**/*", false},
}

func TestRepoCovers(t *testing.T) {
	for _, tt := range repoCoverCases {
		t.Run(tt.claim+" ⊇ "+tt.sub, func(t *testing.T) {
			c, s := mustRepo(t, tt.claim), mustRepo(t, tt.sub)
			if got := RepoCovers(c, s); got != tt.want {
				t.Fatalf("RepoCovers(%q, %q) = %v, want %v", tt.claim, tt.sub, got, tt.want)
			}
			checkRepoCover(t, c, s)
		})
	}
}

var refCoverCases = []struct {
	claim, sub string
	want       bool
}{
	{"refs/heads/*", "refs/heads/*", true},
	{"refs/heads/*", "refs/heads/main", true},
	{"refs/heads/*", "refs/heads/release/*", true},
	{"refs/heads/*", "refs/heads/*/x", true},
	{"refs/heads/*", "refs/*", false},
	{"refs/heads/*", "refs/heads", false},
	{"refs/heads/*", "refs/heads-evil/x", false},
	{"refs/heads/*", "refs/tags/*", false},
	{"refs/heads/*", "refs/*/heads/x", false},
	{"refs/heads/main", "refs/heads/main", true},
	{"refs/heads/main", "refs/heads/*", false},
	{"refs/heads/main", "refs/heads/main*", false},
	{"refs/heads/release/*", "refs/heads/*", false},
	{"refs/*/main", "refs/heads/main", true},
	{"refs/*/main", "refs/*/main", true},
	{"refs/*/main", "refs/*", false},
	{"refs/*/main", "refs/heads/*", false},
	{"refs/*", "refs/*", true},
	{"refs/*", "refs/heads/*/x*", true},
	{"refs/**", "refs/heads/x", true},
	{"refs/heads/**", "refs/heads/*", true},
	{"refs/heads/*-rc", "refs/heads/v1-rc", true},
	{"refs/heads/*-rc", "refs/heads/*-rc", true},
	{"refs/heads/*-rc", "refs/heads/*", false},
	{"refs/heads/*-rc", "refs/heads/v*", false},
}

func TestRefCovers(t *testing.T) {
	for _, tt := range refCoverCases {
		t.Run(tt.claim+" ⊇ "+tt.sub, func(t *testing.T) {
			c, s := mustRef(t, tt.claim), mustRef(t, tt.sub)
			if got := RefCovers(c, s); got != tt.want {
				t.Fatalf("RefCovers(%q, %q) = %v, want %v", tt.claim, tt.sub, got, tt.want)
			}
			checkRefCover(t, c, s)
		})
	}
	neg := mustRef(t, "^refs/heads/*")
	if RefCovers(neg, mustRef(t, "refs/heads/x")) || RefCovers(mustRef(t, "refs/heads/*"), neg) || refCoversAll(neg) {
		t.Error("a negative pattern covers or is covered")
	}
	for claim, want := range map[string]bool{"refs/*": true, "refs/**": true, "refs/heads/*": false, "refs/*/x": false} {
		if got := refCoversAll(mustRef(t, claim)); got != want {
			t.Errorf("refCoversAll(%q) = %v, want %v", claim, got, want)
		}
	}
}

func mustRepo(t *testing.T, s string) bus.RepoPattern {
	t.Helper()
	p, err := bus.ParseRepoPattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRef(t *testing.T, s string) bus.RefPattern {
	t.Helper()
	p, err := bus.ParseRefPattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fillers replace wildcards when sampling names: fixed pieces plus the
// literal text of both patterns, so samples hit the claim's edges.
func fillers(fixed []string, pats ...string) []string {
	out := append([]string(nil), fixed...)
	for _, p := range pats {
		for piece := range strings.FieldsFuncSeq(p, func(r rune) bool { return r == '*' || r == '/' }) {
			out = append(out, piece, piece+"x", "x"+piece)
		}
	}
	return out
}

func rngFor(a, b string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(a + "\x00" + b))
	return rand.New(rand.NewPCG(h.Sum64(), 1))
}

// sampleRepos instantiates a repo pattern: each '*' by a filler without
// '/', each "**" by zero to three segments.
func sampleRepos(sub bus.RepoPattern, fill []string, r *rand.Rand, n int) []string {
	var out []string
	for range n {
		var segs []string
		for seg := range strings.SplitSeq(sub.String(), "/") {
			if seg == "**" {
				for range r.IntN(4) {
					segs = append(segs, "s"+fill[r.IntN(len(fill))])
				}
				continue
			}
			var b strings.Builder
			for i, part := range strings.Split(seg, "*") {
				if i > 0 {
					b.WriteString(fill[r.IntN(len(fill))])
				}
				b.WriteString(part)
			}
			segs = append(segs, b.String())
		}
		out = append(out, strings.Join(segs, "/"))
	}
	return out
}

// sampleRefs instantiates a ref pattern: each '*' by a filler that may
// hold '/'.
func sampleRefs(sub bus.RefPattern, fill []string, r *rand.Rand, n int) []string {
	var out []string
	for range n {
		var b strings.Builder
		for i, part := range strings.Split(sub.String(), "*") {
			if i > 0 {
				for range 1 + r.IntN(3) {
					b.WriteString(fill[r.IntN(len(fill))])
					if r.IntN(2) == 0 {
						b.WriteString("/")
					}
				}
			}
			b.WriteString(part)
		}
		out = append(out, b.String())
	}
	return out
}

var (
	repoFill = []string{"", "x", "ab", "acme", "a-b", "app", "z.y", "_"}
	refFill  = []string{"", "x", "main", "heads", "tags", "release", "v1", "refs"}
)

// checkRepoCover is the soundness property: when RepoCovers says yes, the
// claim (as the bus matches it) matches every sampled instance of sub. For
// a sub without wildcards the answer must be exact.
func checkRepoCover(t *testing.T, c, s bus.RepoPattern) {
	t.Helper()
	got := RepoCovers(c, s)
	if s.Exact() && got != c.Match(s.String()) {
		t.Fatalf("RepoCovers(%q, exact %q) = %v, but Match = %v", c, s, got, !got)
	}
	if !RepoCovers(s, s) || !RepoCovers(c, c) {
		t.Fatalf("RepoCovers is not reflexive on %q or %q", c, s)
	}
	if !got {
		return
	}
	for _, name := range sampleRepos(s, fillers(repoFill, c.String(), s.String()), rngFor(c.String(), s.String()), 64) {
		if !s.Match(name) {
			t.Fatalf("sample %q does not match %q (bad sampler)", name, s)
		}
		if !c.Match(name) {
			t.Fatalf("RepoCovers(%q, %q) but the claim does not match %q", c, s, name)
		}
	}
}

func checkRefCover(t *testing.T, c, s bus.RefPattern) {
	t.Helper()
	got := RefCovers(c, s)
	if !strings.Contains(s.String(), "*") && got != c.Match(s.String()) {
		t.Fatalf("RefCovers(%q, exact %q) = %v, but Match = %v", c, s, got, !got)
	}
	if !RefCovers(s, s) || !RefCovers(c, c) {
		t.Fatalf("RefCovers is not reflexive on %q or %q", c, s)
	}
	if !got {
		return
	}
	for _, name := range sampleRefs(s, fillers(refFill, c.String(), s.String()), rngFor(c.String(), s.String()), 64) {
		if !s.Match(name) {
			t.Fatalf("sample %q does not match %q (bad sampler)", name, s)
		}
		if !c.Match(name) {
			t.Fatalf("RefCovers(%q, %q) but the claim does not match %q", c, s, name)
		}
	}
}

// tooDeep keeps fuzzed repo patterns to a handful of "**": the bus's
// backtracking matcher, used here as the oracle, is exponential in them.
func tooDeep(s string) bool { return strings.Count(s, "**") > 4 || len(s) > 120 }

func FuzzRepoCovers(f *testing.F) {
	for _, tt := range repoCoverCases {
		f.Add(tt.claim, tt.sub)
	}
	f.Fuzz(func(t *testing.T, claim, sub string) {
		if tooDeep(claim) || tooDeep(sub) {
			t.Skip()
		}
		c, err1 := bus.ParseRepoPattern(claim)
		s, err2 := bus.ParseRepoPattern(sub)
		if err1 != nil || err2 != nil {
			t.Skip()
		}
		checkRepoCover(t, c, s)
	})
}

func FuzzRefCovers(f *testing.F) {
	for _, tt := range refCoverCases {
		f.Add(tt.claim, tt.sub)
	}
	f.Fuzz(func(t *testing.T, claim, sub string) {
		if len(claim) > 200 || len(sub) > 200 {
			t.Skip()
		}
		c, err1 := bus.ParseRefPattern(claim)
		s, err2 := bus.ParseRefPattern(sub)
		if err1 != nil || err2 != nil || c.Negate || s.Negate {
			t.Skip()
		}
		checkRefCover(t, c, s)
	})
}

// FuzzParseReadClaim checks the claim parser: it never panics, what it
// accepts prints back to a claim that parses to the same thing, and the
// parsed claim's cover check is sound against the bus matchers.
func FuzzParseReadClaim(f *testing.F) {
	for _, s := range []string{"acme/*", "acme/*:refs/heads/*", "**:refs/tags/v*", "a/b:refs/heads/main", "acme/app:^refs/heads/*", "acme/app:", ":refs/heads/x", "a:b:c", "acme/**:refs/**"} {
		f.Add(s, "acme/app", "refs/heads/main")
	}
	for _, tt := range repoCoverCases {
		f.Add(tt.claim+":refs/heads/*", tt.sub, "refs/heads/x")
	}
	f.Fuzz(func(t *testing.T, claim, subRepo, subRef string) {
		if tooDeep(claim) || tooDeep(subRepo) {
			t.Skip()
		}
		rc, err := ParseReadClaim(claim)
		if err != nil {
			return
		}
		again, err := ParseReadClaim(rc.String())
		if err != nil || again.String() != rc.String() {
			t.Fatalf("ParseReadClaim(%q).String() = %q reparses to %q, %v", claim, rc.String(), again.String(), err)
		}
		if rc.Ref != nil && rc.Ref.Negate {
			t.Fatalf("negative ref accepted in %q", claim)
		}
		s, err1 := bus.ParseRepoPattern(subRepo)
		r, err2 := bus.ParseRefPattern(subRef)
		if err1 != nil || err2 != nil || r.Negate {
			return
		}
		pc := &parsedClaims{read: []ReadClaim{rc}}
		if !pc.coversRefs(s, r) {
			return
		}
		fill := fillers(repoFill, claim, subRepo)
		rng := rngFor(claim, subRepo+"\x00"+subRef)
		refs := sampleRefs(r, fillers(refFill, claim, subRef), rng, 8)
		for _, repo := range sampleRepos(s, fill, rng, 8) {
			for _, ref := range refs {
				if !rc.Repo.Match(repo) || (rc.Ref != nil && !rc.Ref.Match(ref)) {
					t.Fatalf("claim %q covers %q %q but not the instance %q %q", claim, subRepo, subRef, repo, ref)
				}
			}
		}
	})
}
