package bus

import (
	"fmt"
	"strings"
)

// Limits on a subscription's filter. They bound what one stream costs the
// node: its memory (the patterns are kept for the stream's life) and its
// CPU (every event is matched against every glob subscriber's patterns).
// Each refusal is a 400 naming the limit and its value; docs/protocol.md
// lists them.
const (
	// MaxReposPerFilter is the repo names or patterns one subscription may
	// give; more repos take a glob.
	MaxReposPerFilter = 64
	// MaxPatternsPerFilter is the ref patterns one subscription may give.
	MaxPatternsPerFilter = 64
	// MaxRefPatternLen is the bytes of one ref pattern (a repo pattern's
	// bound is MaxRepoLen). Ref names may be longer; patterns that long
	// serve no one but make every match slower.
	MaxRefPatternLen = 256
	// MaxWildcards is the stars one pattern may hold, a run of stars
	// ("**") counting once. Eight covers any real glob ("refs/heads/*",
	// "acme/**/ci-*"); a pattern of hundreds of stars was the costliest
	// thing a client could ask to be matched.
	MaxWildcards = 8
	// MaxFilterBytes is the bytes of all the repo and ref values of one
	// subscription together: 2 KB, the longest query every browser and
	// proxy passes, and what keeps a worst-case stream within 16 KB of
	// the node's memory (see docs/security.md).
	MaxFilterBytes = 2048
	// MaxSegmentsBetweenDoubleStars is the segments a repo pattern may hold
	// between two "**" ("**/ci/jobs/**" has 2). Such a run is searched for
	// along the repo name, so it is what makes a match cost more than one
	// pass: at most this many segment comparisons per repo segment.
	MaxSegmentsBetweenDoubleStars = 4
)

// RefPattern matches ref names the way git refspecs do: '*' matches any run
// of characters, '/' included, so "refs/heads/*" matches
// "refs/heads/feature/x" exactly as `git fetch` would; "**" is accepted as a
// synonym. A pattern without '*' matches one ref exactly. A leading '^'
// negates it, as in git's negative refspecs.
type RefPattern struct {
	Negate bool
	// raw is the pattern without its '^', runs of stars collapsed to one;
	// it is matched as it is, with no parsed parts kept, so a pattern
	// costs the stream its bytes and nothing more.
	raw string
}

// ParseRefPattern validates a pattern: with its stars removed it must be a
// well-formed ref name (see ValidateRef) of at most MaxRefPatternLen bytes
// and MaxWildcards stars.
func ParseRefPattern(s string) (RefPattern, error) {
	p := RefPattern{}
	body := s
	if strings.HasPrefix(body, "^") {
		p.Negate = true
		body = body[1:]
	}
	if len(body) > MaxRefPatternLen {
		return RefPattern{}, fmt.Errorf("%w: ref pattern %q is %d bytes, at most %d allowed (limit: ref pattern length)", ErrInvalid, Clip(s, 80), len(body), MaxRefPatternLen)
	}
	body = collapseStars(body)
	if n := strings.Count(body, "*"); n > MaxWildcards {
		return RefPattern{}, fmt.Errorf("%w: ref pattern %q has %d wildcards, at most %d allowed (limit: wildcards per pattern)", ErrInvalid, Clip(s, 80), n, MaxWildcards)
	}
	if err := checkRefFormat(body, true); err != nil {
		if full := fullRefName(body); full != "" {
			if p.Negate {
				full = "^" + full
			}
			return RefPattern{}, fmt.Errorf("%w: ref pattern %q: %s; did you mean %q?", ErrInvalid, Clip(s, 80), err, full)
		}
		return RefPattern{}, fmt.Errorf("%w: ref pattern %q: %s", ErrInvalid, Clip(s, 80), err)
	}
	p.raw = body
	return p, nil
}

// fullRefName is the full ref a short name most likely meant, as git
// reads "main" as refs/heads/main: refs/ added to heads/, tags/,
// remotes/ and notes/ names, refs/heads/ to others. It is "" for names
// already under refs/, for globs (a pattern like "*" has no one meaning:
// every branch? every ref?), for HEAD, when the result is still not a
// valid ref, and past 80 bytes, where the message truncates names.
func fullRefName(name string) string {
	if strings.HasPrefix(name, "refs/") || strings.Contains(name, "*") || name == "HEAD" || name == "" {
		return ""
	}
	full := "refs/heads/" + name
	for _, kind := range []string{"heads/", "tags/", "remotes/", "notes/"} {
		if strings.HasPrefix(name, kind) {
			full = "refs/" + name
		}
	}
	if len(full) > 80 || checkRefFormat(full, false) != nil {
		return ""
	}
	return full
}

func collapseStars(s string) string {
	for strings.Contains(s, "**") {
		s = strings.ReplaceAll(s, "**", "*")
	}
	return s
}

// String returns the pattern as parsed, with its '^' if negated.
func (p RefPattern) String() string {
	if p.Negate {
		return "^" + p.raw
	}
	return p.raw
}

// Match reports whether ref matches the pattern, ignoring Negate. It does
// not allocate and takes O(len(pattern) + len(ref)) steps whatever the
// pattern (see starMatch).
func (p RefPattern) Match(ref string) bool { return starMatch(p.raw, ref) }

// Prefix is the literal text before the first '*', the part of the namespace
// the pattern can reach.
func (p RefPattern) Prefix() string {
	if i := strings.IndexByte(p.raw, '*'); i >= 0 {
		return p.raw[:i]
	}
	return p.raw
}

// starMatch reports whether s matches pat, where each '*' matches any run
// of bytes. The literal pieces between stars are matched in order: the
// first at the start, the last at the end, each other at its leftmost
// occurrence after the previous one; a later occurrence would only leave
// less room for the pieces after it, so the first fit is the only one to
// try and nothing is ever retried. strings.Index is linear (it falls back
// to Rabin-Karp after a few false starts), so the whole match is
// O(len(pat) + len(s)).
func starMatch(pat, s string) bool {
	i := strings.IndexByte(pat, '*')
	if i < 0 {
		return pat == s
	}
	if !strings.HasPrefix(s, pat[:i]) {
		return false
	}
	s, pat = s[i:], pat[i+1:]
	for {
		j := strings.IndexByte(pat, '*')
		if j < 0 {
			return strings.HasSuffix(s, pat)
		}
		k := strings.Index(s, pat[:j])
		if k < 0 {
			return false
		}
		s, pat = s[k+j:], pat[j+1:]
	}
}

// RepoPattern matches repository names. '*' matches within one path segment
// ("acme/*" matches "acme/app", not "acme/tools/app" nor "acme-evil/app");
// "**" as a whole segment matches any number of segments ("acme/**").
type RepoPattern struct {
	// raw is the pattern as given, matched as it is: no parsed segments
	// are kept, so a pattern costs the stream its bytes and nothing more.
	raw   string
	exact bool // no wildcard: set at parse, asked on every event
}

// ParseRepoPattern validates a repo name or glob: at most MaxRepoLen bytes
// and MaxWildcards wildcards ('*' in a segment, or a "**" segment).
func ParseRepoPattern(s string) (RepoPattern, error) {
	if s == "" {
		return RepoPattern{}, fmt.Errorf("%w: repo is empty", ErrInvalid)
	}
	if len(s) > MaxRepoLen {
		return RepoPattern{}, fmt.Errorf("%w: repo pattern is %d bytes, at most %d allowed (limit: repo pattern length)", ErrInvalid, len(s), MaxRepoLen)
	}
	p := RepoPattern{raw: s, exact: !strings.Contains(s, "*")}
	wild, run, starred := 0, 0, false
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "**" {
			if starred && run > MaxSegmentsBetweenDoubleStars {
				return RepoPattern{}, fmt.Errorf("%w: repo pattern %q has %d segments between two '**', at most %d allowed (limit: segments between '**')", ErrInvalid, Clip(s, 80), run, MaxSegmentsBetweenDoubleStars)
			}
			wild, run, starred = wild+1, 0, true
			continue
		}
		run++
		if strings.Contains(seg, "**") {
			return RepoPattern{}, fmt.Errorf("%w: repo pattern %q: '**' must be a whole segment", ErrInvalid, s)
		}
		if err := validateRepoSegment(strings.ReplaceAll(seg, "*", "x")); err != nil {
			return RepoPattern{}, fmt.Errorf("%w: repo pattern %q: %s", ErrInvalid, s, err)
		}
		wild += strings.Count(seg, "*")
	}
	if wild > MaxWildcards {
		return RepoPattern{}, fmt.Errorf("%w: repo pattern %q has %d wildcards, at most %d allowed (limit: wildcards per pattern)", ErrInvalid, Clip(s, 80), wild, MaxWildcards)
	}
	return p, nil
}

// String returns the pattern as given.
func (p RepoPattern) String() string { return p.raw }

// Exact reports whether the pattern is a plain repo name with no wildcard.
func (p RepoPattern) Exact() bool { return p.exact }

// Match reports whether repo matches. It does not allocate: the hub calls
// it for every glob subscriber on every event.
func (p RepoPattern) Match(repo string) bool {
	if p.Exact() {
		return repo == p.raw
	}
	return matchSegs(p.raw, repo)
}

// segment returns the '/'-separated segment of s starting at at, and where
// the next one starts (len(s)+1 after the last).
func segment(s string, at int) (string, int) {
	if i := strings.IndexByte(s[at:], '/'); i >= 0 {
		return s[at : at+i], at + i + 1
	}
	return s[at:], len(s) + 1
}

// hasDoubleStar reports whether pat has a "**" segment.
func hasDoubleStar(pat string) bool {
	for at := 0; at <= len(pat); {
		var seg string
		seg, at = segment(pat, at)
		if seg == "**" {
			return true
		}
	}
	return false
}

// matchTail matches the segments of name from from on against tail, what
// follows a pattern's last "**": that "**" takes whatever precedes the
// last segments(tail) segments of name, so there is one alignment to try.
func matchTail(tail, name string, from int) bool {
	if tail == "" {
		return true
	}
	n := strings.Count(tail, "/") + 1
	at := len(name) + 1
	for ; n > 0 && at > from; n-- {
		at = strings.LastIndexByte(name[:at-1], '/') + 1
	}
	if n > 0 || at < from {
		return false
	}
	for pi := 0; pi <= len(tail); {
		var ps, ns string
		ps, pi = segment(tail, pi)
		ns, at = segment(name, at)
		if !starMatch(ps, ns) {
			return false
		}
	}
	return true
}

// matchSegs matches the '/'-separated segments of name against those of
// pat, a "**" segment matching any run of whole segments and any other
// segment one segment (a star in it never crosses '/': starMatch on the
// segment alone). It is the wildcard walk with one backtrack point, the
// last "**": a failed segment lets that "**" take one more name segment
// and retries only what follows it, never an earlier "**". What follows
// the last "**" has one alignment, at the end (matchTail); what lies
// between two is at most MaxSegmentsBetweenDoubleStars segments, tried at
// each name segment the "**" can reach, and the backtrack point only moves
// forward. So a match is O(len(pat) + 4 × len(name)) whatever the pattern:
// BenchmarkFilterWorst measures the worst accepted filter.
func matchSegs(pat, name string) bool {
	pDone, nDone := len(pat)+1, len(name)+1
	pi, ni := 0, 0
	starPi, starNi := -1, 0 // after the last "**"; where it stopped taking segments
	for {
		if pi < pDone {
			ps, pnext := segment(pat, pi)
			if ps == "**" {
				if !hasDoubleStar(pat[min(pnext, len(pat)):]) {
					return matchTail(pat[min(pnext, len(pat)):], name, ni)
				}
				starPi, starNi = pnext, ni
				pi = pnext
				continue
			}
			if ni < nDone {
				ns, nnext := segment(name, ni)
				if starMatch(ps, ns) {
					pi, ni = pnext, nnext
					continue
				}
			}
		} else if ni >= nDone {
			return true
		}
		if starPi < 0 || starNi >= nDone {
			return false
		}
		_, starNi = segment(name, starNi) // the last "**" takes one more segment
		pi, ni = starPi, starNi
	}
}

// Filter selects events for a subscription: the repo matches one of Repos,
// and the ref matches one of the positive ref patterns (or there are none)
// and none of the negative ones.
type Filter struct {
	Repos   []RepoPattern
	Include []RefPattern
	Exclude []RefPattern
}

// ParseFilter builds a filter from query values; an empty refs list means
// every ref. Beyond the limits of each pattern, it refuses more than
// MaxReposPerFilter repos, MaxPatternsPerFilter ref patterns and
// MaxFilterBytes bytes of them all.
func ParseFilter(repos, refs []string) (Filter, error) {
	var f Filter
	if len(repos) == 0 {
		return f, fmt.Errorf("%w: at least one repo is required", ErrInvalid)
	}
	if len(repos) > MaxReposPerFilter {
		return f, fmt.Errorf("%w: %d repos, at most %d per subscription (limit: repos per subscription)", ErrInvalid, len(repos), MaxReposPerFilter)
	}
	if len(refs) > MaxPatternsPerFilter {
		return f, fmt.Errorf("%w: %d ref patterns, at most %d per subscription (limit: ref patterns per subscription)", ErrInvalid, len(refs), MaxPatternsPerFilter)
	}
	total := 0
	for _, v := range repos {
		total += len(v)
	}
	for _, v := range refs {
		total += len(v)
	}
	if total > MaxFilterBytes {
		return f, fmt.Errorf("%w: the repo and ref values add up to %d bytes, at most %d per subscription (limit: filter bytes)", ErrInvalid, total, MaxFilterBytes)
	}
	// The strings often point into a request's query; one copy of them
	// all lets the request go while a long-lived subscription keeps its
	// filter, in a single allocation.
	var b strings.Builder
	b.Grow(total)
	for _, v := range repos {
		b.WriteString(v)
	}
	for _, v := range refs {
		b.WriteString(v)
	}
	all, at := b.String(), 0
	next := func(v string) string {
		at += len(v)
		return all[at-len(v) : at]
	}
	f.Repos = make([]RepoPattern, 0, len(repos))
	for _, r := range repos {
		p, err := ParseRepoPattern(next(r))
		if err != nil {
			return Filter{}, err
		}
		f.Repos = append(f.Repos, p)
	}
	for _, r := range refs {
		p, err := ParseRefPattern(next(r))
		if err != nil {
			return Filter{}, err
		}
		if p.Negate {
			f.Exclude = append(f.Exclude, p)
		} else {
			f.Include = append(f.Include, p)
		}
	}
	return f, nil
}

// MatchRepo reports whether the filter covers the repo at all.
func (f *Filter) MatchRepo(repo string) bool {
	for _, p := range f.Repos {
		if p.Match(repo) {
			return true
		}
	}
	return false
}

// MatchRef reports whether the ref passes the ref patterns.
func (f *Filter) MatchRef(ref string) bool {
	for _, p := range f.Exclude {
		if p.Match(ref) {
			return false
		}
	}
	if len(f.Include) == 0 {
		return true
	}
	for _, p := range f.Include {
		if p.Match(ref) {
			return true
		}
	}
	return false
}

// Match reports whether the event passes the filter. A KindSync event has
// no ref and passes whenever its repo does.
func (f *Filter) Match(e *Event) bool {
	return f.MatchRepo(e.Repo) && f.MatchEventRef(e)
}

// MatchEventRef is Match for a caller that already knows the repo
// matches (an index by repo name).
func (f *Filter) MatchEventRef(e *Event) bool {
	return e.Kind == KindSync || f.MatchRef(e.Ref)
}
