package gitfront

import (
	"container/list"
	"context"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/refcast/refcast/bus"
)

// snapshot is a repo's state as the advertisement needs it: every ref
// sorted as git sorts them (byte order), HEAD and completeness. Immutable
// once built, so one snapshot serves any number of requests at once.
type snapshot struct {
	epoch, seq uint64 // the partition position the state was read at
	refs       []ref
	head       string // HEAD's symbolic target, "" when unknown
	headID     string // the target's id, "" when it does not exist
	complete   bool

	full     sync.Once // builds fullV0 and fullETag on first use
	fullV0   []byte    // the v0 advertisement of every ref
	fullETag string
}

// v0All returns the v0 advertisement for a client that sees every ref (a
// public repo, an unlimited token) and its ETag, built on the first such
// request: the next ones, until the repo changes, copy bytes instead of
// encoding 100,000 lines again. c is the handler's, the same for every
// call.
func (s *snapshot) v0All(c *caps) ([]byte, string) {
	s.full.Do(func() {
		s.fullV0 = s.view(nil, nil).appendV0(nil, c)
		s.fullETag = etagOf(s.fullV0)
	})
	return s.fullV0, s.fullETag
}

func newSnapshot(st *bus.RefState) *snapshot {
	s := &snapshot{epoch: st.Epoch, seq: st.Seq, refs: make([]ref, 0, len(st.Refs)),
		head: st.Head, headID: st.Refs[st.Head], complete: st.Complete}
	for name, id := range st.Refs {
		s.refs = append(s.refs, ref{name: name, id: id, peeled: st.Peeled[name]})
	}
	slices.SortFunc(s.refs, func(a, b ref) int { return strings.Compare(a.name, b.name) })
	return s
}

// servable reports whether git clients may be answered from it.
func (s *snapshot) servable() bool { return s.complete && len(s.refs) > 0 }

// view selects the refs visible (nil: all) under any of prefixes (none:
// all). Each prefix is a binary search in the sorted refs, so a no-op
// fetch of one branch costs O(log refs) whatever the repo's size.
func (s *snapshot) view(visible func(string) bool, prefixes []string) *view {
	v := &view{format: s.format(visible)}
	add := func(rs []ref) {
		for _, r := range rs {
			if visible == nil || visible(r.name) {
				v.refs = append(v.refs, r)
			}
		}
	}
	if len(prefixes) == 0 {
		v.refs = make([]ref, 0, len(s.refs))
		add(s.refs)
	} else {
		// The ranges of overlapping prefixes ("refs/heads/" and
		// "refs/heads/main") overlap: merged, each ref is listed once and
		// in order.
		type span struct{ lo, hi int }
		spans := make([]span, 0, len(prefixes))
		for _, p := range prefixes {
			lo := sort.Search(len(s.refs), func(i int) bool { return s.refs[i].name >= p })
			hi := lo
			for hi < len(s.refs) && strings.HasPrefix(s.refs[hi].name, p) {
				hi++
			}
			if lo < hi {
				spans = append(spans, span{lo, hi})
			}
		}
		slices.SortFunc(spans, func(a, b span) int { return a.lo - b.lo })
		end := 0
		for _, sp := range spans {
			add(s.refs[max(sp.lo, end):max(sp.hi, end)])
			end = max(end, sp.hi)
		}
	}
	if s.head != "" && (visible == nil || visible(s.head)) {
		v.head, v.headID = s.head, s.headID
	}
	return v
}

// format is the object format of the visible refs: "sha256" when their
// ids have 64 digits, else "sha1" (also when none is visible). A
// repository has one format, so the first visible ref decides.
func (s *snapshot) format(visible func(string) bool) string {
	for _, r := range s.refs {
		if visible == nil || visible(r.name) {
			if len(r.id) == 64 {
				return "sha256"
			}
			return "sha1"
		}
	}
	return "sha1"
}

// HeadReader is the optional part of the bus the snapshot cache needs:
// the position of every partition, cheap to read (held in memory by the
// embedded buses, one pipelined round trip on Redis).
type HeadReader interface {
	Heads(ctx context.Context) (bus.Heads, error)
}

// snapCache keeps the snapshots of recently advertised repos, so that a
// request for a repo whose partition has not moved since costs a Heads
// read instead of a copy and a sort of every ref: for a no-op fetch from
// a 100,000-ref repo, 0.7 ms of CPU instead of 130 ms (docs/performance.md,
// "Git front"). A snapshot is current while its
// partition's head is the position it was read at: every publish appends
// at least one event, so an unchanged head means an unchanged state.
// Bounded by the refs held, least recently used dropped first. Safe for
// concurrent use.
type snapCache struct {
	heads   HeadReader // set at construction
	maxRefs int        // set at construction

	mu   sync.Mutex               // guards the fields below
	byID map[string]*list.Element // repo -> element holding a *cached
	lru  *list.List               // front: most recently used
	refs int                      // refs held by all snapshots
}

type cached struct {
	repo string
	snap *snapshot
}

func newSnapCache(h HeadReader, maxRefs int) *snapCache {
	return &snapCache{heads: h, maxRefs: maxRefs, byID: map[string]*list.Element{}, lru: list.New()}
}

// get returns the repo's current snapshot, read from state and cached
// when the one held is out of date.
func (c *snapCache) get(ctx context.Context, state StateReader, repo string) (*snapshot, error) {
	if c == nil {
		return readSnapshot(ctx, state, repo)
	}
	// A failed Heads read only costs the cache; the state read reports
	// the bus's trouble.
	if heads, err := c.heads.Heads(ctx); err == nil && len(heads) > 0 {
		h := heads[bus.PartitionOf(repo, len(heads))]
		c.mu.Lock()
		if e, ok := c.byID[repo]; ok {
			if s := e.Value.(*cached).snap; s.epoch == h.Epoch && s.seq == h.Last {
				c.lru.MoveToFront(e)
				c.mu.Unlock()
				return s, nil
			}
		}
		c.mu.Unlock()
	}
	s, err := readSnapshot(ctx, state, repo)
	if err != nil {
		return nil, err
	}
	c.put(repo, s)
	return s, nil
}

func (c *snapCache) put(repo string, s *snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[repo]; ok {
		c.refs -= len(e.Value.(*cached).snap.refs)
		c.lru.Remove(e)
		delete(c.byID, repo)
	}
	if len(s.refs) > c.maxRefs {
		return // larger than the whole cache: served, not kept
	}
	for c.refs+len(s.refs) > c.maxRefs {
		old := c.lru.Remove(c.lru.Back()).(*cached)
		delete(c.byID, old.repo)
		c.refs -= len(old.snap.refs)
	}
	c.byID[repo] = c.lru.PushFront(&cached{repo: repo, snap: s})
	c.refs += len(s.refs)
}

func readSnapshot(ctx context.Context, state StateReader, repo string) (*snapshot, error) {
	st, err := state.Refs(ctx, repo)
	if err != nil {
		return nil, err
	}
	return newSnapshot(&st), nil
}
