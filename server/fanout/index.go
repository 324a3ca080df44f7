package fanout

import (
	"strings"

	"github.com/refcast/refcast/bus"
)

// The subscriber index: an event is matched only against the subscribers
// of its repo (exact) and those with a repo glob, and subscribers with the
// same filter share one interned copy. All of it is guarded by Engine.mu.

// index adds s to the index, with the shared copy of its filter. Called
// with e.mu held.
func (e *Engine) index(s *subscriber) {
	e.intern(s)
	glob := false
	for _, p := range s.filter.Repos {
		if !p.Exact() {
			glob = true
		}
	}
	if glob {
		e.globs[s] = struct{}{}
		e.globVersion.Add(1)
	} else {
		for _, p := range s.filter.Repos {
			m := e.exact[p.String()]
			if m == nil {
				m = make(map[*subscriber]struct{})
				e.exact[p.String()] = m
			}
			m[s] = struct{}{}
		}
	}
}

// unindex removes s from the index. Called with e.mu held.
func (e *Engine) unindex(s *subscriber) {
	e.release(s)
	if _, ok := e.globs[s]; ok {
		delete(e.globs, s)
		e.globVersion.Add(1)
	}
	for _, p := range s.filter.Repos {
		if m := e.exact[p.String()]; m != nil {
			delete(m, s)
			if len(m) == 0 {
				delete(e.exact, p.String())
			}
		}
	}
}

// sharedFilter is one filter used by every subscriber asking for the same
// repos and refs: thousands of dashboards on one repo keep one parsed copy
// (memory per idle stream), and the engine matches a ref once for a run of
// them.
type sharedFilter struct {
	f    bus.Filter // set at construction, read-only after
	key  string     // filterKey(&f); set at construction
	subs int        // subscribers using it; guarded by Engine.mu
	// stamp is the engine's matchStamp of the event match is for; both
	// are guarded by Engine.mu.
	stamp uint64
	match bool
	// globStamp and globMatch are the same for the glob stage, which
	// alone uses them (e.globStamp).
	globStamp uint64
	globMatch bool
}

// filterKey is a filter's canonical form. Pattern strings cannot contain
// NUL or newline (they are validated ref and repo names).
func filterKey(f *bus.Filter) string {
	var b strings.Builder
	for _, p := range f.Repos {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	b.WriteByte(0)
	for _, p := range f.Include {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	b.WriteByte(0)
	for _, p := range f.Exclude {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// intern makes s use the shared copy of its filter. Called with e.mu held.
func (e *Engine) intern(s *subscriber) {
	key := filterKey(&s.filter)
	sf := e.filters[key]
	if sf == nil {
		sf = &sharedFilter{f: s.filter, key: key}
		e.filters[key] = sf
	}
	sf.subs++
	s.filter, s.shared = sf.f, sf
}

// release drops s's use of its shared filter. Called with e.mu held.
func (e *Engine) release(s *subscriber) {
	sf := s.shared
	if sf == nil {
		return
	}
	if sf.subs--; sf.subs == 0 {
		delete(e.filters, sf.key)
	}
}
