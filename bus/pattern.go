package bus

import (
	"fmt"
	"strings"
)

// Limits on a filter, so a subscription's matching cost stays bounded.
const (
	MaxPatternsPerFilter = 64
	MaxReposPerFilter    = 64
)

// RefPattern matches ref names the way git refspecs do: '*' matches any run
// of characters, '/' included, so "refs/heads/*" matches
// "refs/heads/feature/x" exactly as `git fetch` would; "**" is accepted as a
// synonym. A pattern without '*' matches one ref exactly. A leading '^'
// negates it, as in git's negative refspecs.
type RefPattern struct {
	Negate bool
	raw    string   // without the '^'
	parts  []string // literal pieces between stars; len 1 means exact
}

// ParseRefPattern validates a pattern: with its stars removed it must be a
// well-formed ref name (see ValidateRef).
func ParseRefPattern(s string) (RefPattern, error) {
	p := RefPattern{}
	body := s
	if strings.HasPrefix(body, "^") {
		p.Negate = true
		body = body[1:]
	}
	body = collapseStars(body)
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
	p.parts = strings.Split(body, "*")
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

// Match reports whether ref matches the pattern, ignoring Negate.
func (p RefPattern) Match(ref string) bool { return globMatch(p.parts, ref, false) }

// Prefix is the literal text before the first '*', the part of the namespace
// the pattern can reach.
func (p RefPattern) Prefix() string { return p.parts[0] }

// globMatch matches s against literal parts separated by stars. With
// noSlash, a star does not cross '/'.
func globMatch(parts []string, s string, noSlash bool) bool {
	if len(parts) == 1 {
		return s == parts[0]
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		j := strings.Index(s, part)
		if j < 0 || (noSlash && strings.Contains(s[:j], "/")) {
			return false
		}
		s = s[j+len(part):]
	}
	if !strings.HasSuffix(s, last) {
		return false
	}
	return !noSlash || !strings.Contains(s[:len(s)-len(last)], "/")
}

// RepoPattern matches repository names. '*' matches within one path segment
// ("acme/*" matches "acme/app", not "acme/tools/app" nor "acme-evil/app");
// "**" as a whole segment matches any number of segments ("acme/**").
type RepoPattern struct {
	raw   string
	exact bool       // no wildcard: set at parse, asked on every event
	segs  [][]string // per segment: literal parts between stars; nil means "**"
}

// ParseRepoPattern validates a repo name or glob.
func ParseRepoPattern(s string) (RepoPattern, error) {
	if s == "" {
		return RepoPattern{}, fmt.Errorf("%w: repo is empty", ErrInvalid)
	}
	if len(s) > MaxRepoLen {
		return RepoPattern{}, fmt.Errorf("%w: repo pattern is %d bytes, at most %d allowed", ErrInvalid, len(s), MaxRepoLen)
	}
	p := RepoPattern{raw: s, exact: !strings.Contains(s, "*")}
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "**" {
			p.segs = append(p.segs, nil)
			continue
		}
		if strings.Contains(seg, "**") {
			return RepoPattern{}, fmt.Errorf("%w: repo pattern %q: '**' must be a whole segment", ErrInvalid, s)
		}
		if err := validateRepoSegment(strings.ReplaceAll(seg, "*", "x")); err != nil {
			return RepoPattern{}, fmt.Errorf("%w: repo pattern %q: %s", ErrInvalid, s, err)
		}
		p.segs = append(p.segs, strings.Split(seg, "*"))
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
	return matchSegs(p.segs, repo)
}

// matchSegs matches the '/'-separated segments of name against pat, "**"
// matching any run of whole segments. It is the classic wildcard walk with
// one backtrack point (the last "**"), so it takes O(segments × pattern)
// steps whatever the pattern: a hostile "**/**/**/…/x" cannot make it
// exponential.
func matchSegs(pat [][]string, name string) bool {
	done := len(name) + 1 // pos past the last segment
	nextSeg := func(pos int) int {
		if i := strings.IndexByte(name[pos:], '/'); i >= 0 {
			return pos + i + 1
		}
		return done
	}
	pi, pos := 0, 0
	starPi, starPos := -1, 0
	for {
		if pos >= done {
			for pi < len(pat) && pat[pi] == nil {
				pi++
			}
			if pi == len(pat) {
				return true
			}
		} else if pi < len(pat) && pat[pi] == nil {
			starPi, starPos = pi, pos
			pi++
			continue
		} else if pi < len(pat) {
			next := nextSeg(pos)
			if globMatch(pat[pi], name[pos:next-1], true) {
				pi, pos = pi+1, next
				continue
			}
		}
		if starPi < 0 || starPos >= done {
			return false
		}
		starPos = nextSeg(starPos) // the last "**" takes one more segment
		pi, pos = starPi+1, starPos
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
// every ref.
func ParseFilter(repos, refs []string) (Filter, error) {
	var f Filter
	// The strings often point into a request's query; copies let the
	// request go while a long-lived subscription keeps its filter.
	if len(repos) == 0 {
		return f, fmt.Errorf("%w: at least one repo is required", ErrInvalid)
	}
	if len(repos) > MaxReposPerFilter {
		return f, fmt.Errorf("%w: %d repos, at most %d per subscription", ErrInvalid, len(repos), MaxReposPerFilter)
	}
	if len(refs) > MaxPatternsPerFilter {
		return f, fmt.Errorf("%w: %d ref patterns, at most %d per subscription", ErrInvalid, len(refs), MaxPatternsPerFilter)
	}
	for _, r := range repos {
		p, err := ParseRepoPattern(strings.Clone(r))
		if err != nil {
			return Filter{}, err
		}
		f.Repos = append(f.Repos, p)
	}
	for _, r := range refs {
		p, err := ParseRefPattern(strings.Clone(r))
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
