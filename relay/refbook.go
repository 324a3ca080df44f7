package relay

import (
	"maps"
	"slices"

	"github.com/refcast/refcast/bus"
)

// refBook remembers an object id per repo and ref, at most max refs over
// all repos: past that a ref not yet remembered is not (an update of a
// remembered one still is, and a deletion frees room). A ref it does not
// remember is, for a reset, one whose id is unknown: the reset sends it.
// Not safe for concurrent use (the Relay's mu guards it).
type refBook struct {
	refs map[string]map[string]string // repo → ref → id
	n    int                          // refs remembered
	max  int
}

func newRefBook(max int) refBook {
	return refBook{refs: map[string]map[string]string{}, max: max}
}

// set remembers id for repo's ref; a zero id (a deletion) forgets the ref.
// What the state file would refuse to load (an invalid name or id; the
// node validates every event, so only a bug gets here) is forgotten too,
// so the relay never writes a file its restart cannot read.
func (b *refBook) set(repo, ref, id string) {
	refs := b.refs[repo]
	_, had := refs[ref]
	switch {
	case bus.IsZeroID(id) || !valid(repo, ref, id):
		if had {
			delete(refs, ref)
			b.n--
			if len(refs) == 0 {
				delete(b.refs, repo)
			}
		}
	case had:
		refs[ref] = id
	case b.n < b.max:
		if refs == nil {
			refs = map[string]string{}
			b.refs[repo] = refs
		}
		refs[ref] = id
		b.n++
	}
}

// repo returns repo's remembered refs (nil: none); the caller must not
// change it.
func (b *refBook) repo(repo string) map[string]string { return b.refs[repo] }

// load replaces the contents with refs, in sorted order so that which
// refs fit under max does not depend on map order.
func (b *refBook) load(refs map[string]map[string]string) {
	*b = newRefBook(b.max)
	for _, repo := range slices.Sorted(maps.Keys(refs)) {
		for _, ref := range slices.Sorted(maps.Keys(refs[repo])) {
			b.set(repo, ref, refs[repo][ref])
		}
	}
}

// copy returns a deep copy of the refs remembered.
func (b *refBook) copy() map[string]map[string]string {
	out := make(map[string]map[string]string, len(b.refs))
	for repo, refs := range b.refs {
		out[repo] = maps.Clone(refs)
	}
	return out
}

func valid(repo, ref, id string) bool {
	return bus.ValidateObjectID(id) == nil && bus.ValidateRef(ref) == nil && bus.ValidateRepo(repo) == nil
}
