package server

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// Bounds of a hint: it names at most maxHintRepos missing repos and
// maxSuggestions suggestions for each, so a filter of 64 typos still gives a
// line a person reads, and a big owner's thousand repos are not listed.
const (
	maxHintRepos   = 3
	maxSuggestions = 5
)

// hint explains an empty answer: for each exact repo of the filter that has
// no ref state, it says so and suggests repos of the same owner, or spelled
// the same but for case, among those the request's credential may read
// (never others: a name is information). It returns "" when every exact
// repo has refs, or the filter only has globs (an empty glob is not a
// typo). known lists repos already read with refs (a snapshot's), which
// need no second read.
//
// It reads the bus only for repos that look missing, and lists all repos
// only when one is: a typo is rare, a correct name costs one Refs read.
func (s *Server) hint(ctx context.Context, r *http.Request, f *bus.Filter, known []wire.RepoRefs) string {
	var missing []string
	for _, p := range f.Repos {
		name := p.String()
		if !p.Exact() || slices.Contains(missing, name) {
			continue
		}
		if i := slices.IndexFunc(known, func(rr wire.RepoRefs) bool { return rr.Repo == name }); i >= 0 && len(known[i].Refs) > 0 {
			continue
		}
		st, err := s.opts.Bus.Refs(ctx, name)
		if err != nil || len(st.Refs) > 0 {
			continue // no hint rather than a wrong one
		}
		missing = append(missing, name)
	}
	if len(missing) == 0 {
		return ""
	}
	visible, err := s.readable(r)
	if err != nil {
		visible = func(string) bool { return false }
	}
	all, err := s.opts.Bus.Repos(ctx)
	if err != nil {
		all = nil
	}
	var parts []string
	for i, name := range missing {
		if i == maxHintRepos {
			parts = append(parts, "and "+strconv.Itoa(len(missing)-i)+" more without refs")
			break
		}
		sugg := suggest(name, all, visible)
		if len(sugg) == 0 {
			parts = append(parts, "no refs known for "+name+" and no readable repo of owner "+owner(name)+": check the name, or push to it first")
			continue
		}
		parts = append(parts, "no refs known for "+name+"; known repos like it: "+strings.Join(sugg, ", "))
	}
	return strings.Join(parts, "; ")
}

// suggest returns up to maxSuggestions repos of all that visible allows,
// spelled like name but for case, or of the same owner (first segment,
// compared without case), closest first.
func suggest(name string, all []string, visible func(string) bool) []string {
	type cand struct {
		repo string
		dist int
	}
	var cs []cand
	lname, lowner := strings.ToLower(name), strings.ToLower(owner(name))
	for _, r := range all {
		lr := strings.ToLower(r)
		if r == name || (lr != lname && strings.ToLower(owner(r)) != lowner) || !visible(r) {
			continue
		}
		d := 0 // the same name but for case comes first
		if lr != lname {
			d = 1 + editDistance(lname, lr)
		}
		cs = append(cs, cand{r, d})
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.dist != b.dist {
			return a.dist - b.dist
		}
		return strings.Compare(a.repo, b.repo)
	})
	out := make([]string, 0, min(len(cs), maxSuggestions))
	for _, c := range cs[:min(len(cs), maxSuggestions)] {
		out = append(out, c.repo)
	}
	return out
}

// owner is a repo name's first segment.
func owner(repo string) string {
	o, _, _ := strings.Cut(repo, "/")
	return o
}

// editDistance is the Levenshtein distance in bytes. Repo names are at most
// bus.MaxRepoLen (255) bytes, so one call costs at most 65 025 steps.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
