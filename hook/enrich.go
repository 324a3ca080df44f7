package hook

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/refcast/refcast/bus"
)

// Enrichment defaults.
const (
	// DefaultEnrichBudget is the total time enrichment may take for one
	// push. Past it the push is published with what was learnt, the rest
	// marked partial.
	DefaultEnrichBudget = 100 * time.Millisecond
	// DefaultMaxCommits is how many added commits are counted before
	// reporting "N+" (commits_more).
	DefaultMaxCommits = 100
	// maxPeel bounds tag-to-tag chains.
	maxPeel = 8
)

// EnrichOptions tunes Enrich. The zero value uses the defaults.
type EnrichOptions struct {
	// Budget bounds the whole enrichment; 0 means DefaultEnrichBudget and a
	// negative value disables enrichment (every update is marked none).
	Budget time.Duration
	// MaxCommits bounds the added-commit count; 0 means DefaultMaxCommits.
	MaxCommits int
	// ObjectReader picks how objects are read: "" or "auto" (loose objects
	// read directly, the others through one pipelined git cat-file, falling
	// back to go-git for SHA-1 repositories if git fails), "go-git"
	// (in-process, alternates supported, SHA-1 only) or "git".
	ObjectReader string
	// NoLoose makes "auto" ask git (or go-git) for every object, loose
	// ones included: REFCAST_HOOK_DIRECT=false.
	NoLoose bool
}

// EnrichStats says what an Enrich call did, for logs and benchmarks.
type EnrichStats struct {
	Elapsed             time.Duration
	OverBudget          bool
	Full, Partial, None int
}

// Enrich fills the optional fields of each update in place, from what the
// repository knows now (after the push): for every update that leaves a
// ref pointing somewhere, the tip commit (annotated tags peeled, Peeled
// set); for a moved ref, Forced (non-fast-forward, from `git merge-base
// --is-ancestor`, which uses the commit-graph); for a branch (anything not
// under refs/tags/), Commits, the commits the update added, counted up to
// MaxCommits: old..new for a moved ref, and for a new ref the commits no
// other ref (nor an old value in the push) reaches.
//
// Everything is bounded by the budget: what does not fit is left out and
// the update marked EnrichPartial. A field that does not apply (Forced for
// a new ref, Commit for a tree) does not make an update partial. Deletes
// are marked EnrichNone. Enrich never fails: a broken repository yields
// EnrichNone and the plain updates.
func (r *Repo) Enrich(ctx context.Context, ups []bus.RefUpdate, opts EnrichOptions) EnrichStats {
	start := time.Now()
	budget := opts.Budget
	if budget == 0 {
		budget = DefaultEnrichBudget
	}
	maxCommits := opts.MaxCommits
	if maxCommits <= 0 {
		maxCommits = DefaultMaxCommits
	}
	st := make([]state, len(ups))
	if budget < 0 {
		for i := range st {
			st[i].failed = true // nothing attempted: none
		}
		return finish(ups, st, start, false)
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()

	src := r.objectSource(opts.ObjectReader, !opts.NoLoose)
	defer src.close()

	// Phase 1: the tips, peeled, read in rounds (a round per tag level), so
	// a big push is one pipelined batch, not a round trip per object.
	resolved := map[string]rawObject{}
	var frontier []string
	for _, u := range ups {
		if !bus.IsZeroID(u.New) {
			frontier = append(frontier, u.New)
		}
	}
	for range maxPeel {
		frontier = uniqueUnresolved(frontier, resolved)
		if len(frontier) == 0 || ctx.Err() != nil {
			break
		}
		var next []string
		for id, o := range objects(ctx, src, frontier) {
			resolved[id] = o
			if o.err == nil && o.typ == "tag" {
				if target, _, err := parseTagTarget(o.data); err == nil && bus.ValidateObjectID(target) == nil {
					next = append(next, target)
				}
			}
		}
		frontier = next
	}
	for i := range ups {
		if !bus.IsZeroID(ups[i].New) {
			st[i].isCommit = tip(&ups[i], resolved, &st[i])
		}
	}
	// Phase 1b: the ordinary push of a few commits on top of a branch. When
	// the new tip reaches the old one through a short chain of
	// single-parent commits (read through the same pipelined reader), the
	// update is a fast-forward adding exactly that chain, and phases 2 and
	// 3 need no git process (two process starts, measured as most of what
	// enrichment adds to a push: BenchmarkPushLatency).
	linear := make([]bool, len(ups))
	for i := range ups {
		u := &ups[i]
		if u.Kind() != bus.KindUpdate || !st[i].isCommit || u.Peeled != "" || st[i].missed {
			continue
		}
		if n, ok := linearAdded(ctx, src, resolved, u.New, u.Old, min(maxLinearWalk, maxCommits)); ok {
			linear[i] = true
			u.Forced = new(false)
			if !strings.HasPrefix(u.Ref, "refs/tags/") {
				u.Commits = new(n)
			}
		}
	}
	// Phase 2: forced, one git process per moved ref.
	for i := range ups {
		u := &ups[i]
		if u.Kind() != bus.KindUpdate || st[i].missed || linear[i] {
			continue
		}
		if ctx.Err() != nil {
			st[i].missed = true
			continue
		}
		_, err := r.run(ctx, nil, "merge-base", "--is-ancestor", u.Old, u.New)
		switch code := exitCode(err); {
		case err == nil:
			u.Forced = new(false)
		case code == 1:
			u.Forced = new(true)
		case ctx.Err() != nil:
			st[i].missed = true
		default: // not commits (a tag to a tree), or gone: does not apply
		}
	}
	// Phase 3: commits added, for branches whose tip is a commit.
	var exclude []string // other refs of the push and their old values
	for _, u := range ups {
		exclude = append(exclude, "--exclude="+u.Ref)
	}
	for i := range ups {
		u := &ups[i]
		if !st[i].isCommit || st[i].missed || linear[i] || strings.HasPrefix(u.Ref, "refs/tags/") {
			continue
		}
		if ctx.Err() != nil {
			st[i].missed = true
			continue
		}
		args := []string{"rev-list", "--max-count=" + strconv.Itoa(maxCommits+1), u.New, "--not"}
		if u.Kind() == bus.KindUpdate {
			args = append(args, u.Old)
		} else {
			args = append(args, exclude...)
			args = append(args, "--all")
			for _, o := range ups {
				if !bus.IsZeroID(o.Old) {
					args = append(args, o.Old)
				}
			}
		}
		out, err := r.run(ctx, nil, args...)
		if err != nil {
			if ctx.Err() != nil {
				st[i].missed = true
			}
			continue
		}
		n := bytes.Count(out, []byte("\n"))
		if n > maxCommits {
			n, u.CommitsMore = maxCommits, true
		}
		u.Commits = new(n)
	}
	return finish(ups, st, start, ctx.Err() != nil)
}

// maxLinearWalk bounds the commits Enrich's fast-forward shortcut reads
// before leaving the question to git merge-base and git rev-list.
const maxLinearWalk = 16

// linearAdded walks first parents from the commit from, at most limit
// commits, and reports how many it passed when it reaches to through
// commits that each have exactly one parent: then to is an ancestor of from
// and to..from is exactly those commits. Anything else (a merge, a root, an
// unreadable object, the limit, the budget) answers false, and the caller
// asks git. Objects read are added to resolved.
func linearAdded(ctx context.Context, src objectSource, resolved map[string]rawObject, from, to string, limit int) (int, bool) {
	id := from
	for n := 1; n <= limit; n++ {
		o, ok := resolved[id]
		if !ok {
			if ctx.Err() != nil {
				return 0, false
			}
			if o, ok = objects(ctx, src, []string{id})[id]; !ok {
				return 0, false
			}
			resolved[id] = o
		}
		if o.err != nil || o.typ != "commit" {
			return 0, false
		}
		c, err := parseCommit(o.data)
		if err != nil || len(c.parents) != 1 {
			return 0, false
		}
		if c.parents[0] == to {
			return n, true
		}
		id = c.parents[0]
	}
	return 0, false
}

// state is Enrich's bookkeeping for one update.
type state struct {
	isCommit bool // the (peeled) tip is a commit
	missed   bool // the budget ran out before something that applies
	failed   bool // the tip could not be read at all
}

func finish(ups []bus.RefUpdate, st []state, start time.Time, over bool) EnrichStats {
	s := EnrichStats{Elapsed: time.Since(start), OverBudget: over}
	for i := range ups {
		u := &ups[i]
		switch {
		case bus.IsZeroID(u.New) || (st[i].failed && !st[i].missed):
			u.Enriched = bus.EnrichNone
			s.None++
		case st[i].missed:
			u.Enriched = bus.EnrichPartial
			s.Partial++
		default:
			u.Enriched = bus.EnrichFull
			s.Full++
		}
	}
	return s
}

// tip follows the update's new object through annotated tags in
// resolved, and fills Commit and Peeled. It reports whether the peeled tip
// is a commit.
func tip(u *bus.RefUpdate, resolved map[string]rawObject, st *state) bool {
	id := u.New
	for range maxPeel {
		o, ok := resolved[id]
		switch {
		case !ok: // the budget ran out before it was read
			st.missed = true
			return false
		case o.err != nil:
			st.failed = true
			return false
		case o.typ == "tag":
			target, _, err := parseTagTarget(o.data)
			if err != nil {
				st.failed = true
				return false
			}
			id = target
			continue
		case o.typ == "commit":
			c, err := parseCommit(o.data)
			if err != nil {
				st.failed = true
				return false
			}
			if id != u.New {
				u.Peeled = id
			}
			u.Commit = &bus.Commit{
				Subject: c.subject,
				Author:  bus.Cut(strings.ToValidUTF8(c.author, "\uFFFD"), bus.MaxSubjectLen),
				Time:    c.time,
			}
			return true
		default: // a tag of a tree or blob: nothing more applies
			return false
		}
	}
	return false
}

func uniqueUnresolved(ids []string, resolved map[string]rawObject) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if _, done := resolved[id]; !done && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// objectSource picks the object reader. Measured (BenchmarkObjectRead,
// BenchmarkEnrich100k): go-git is ~0.5ms faster for one object on a small
// repository, but loading a big pack's index costs it ~35ms on a
// 100k-commit repository where git cat-file needs ~2ms, and it reads 1000
// objects 3x slower than one pipelined cat-file. So "auto" reads through
// git cat-file and falls back to go-git (alternates included) only if git
// fails; SHA-256 repositories use git alone (go-git v5 is built for SHA-1).
//
// Before either, with loose, "auto" reads loose objects itself
// (looseSource): a small push's objects are loose, and then no process is
// started at all.
func (r *Repo) objectSource(kind string, loose bool) objectSource {
	cat := &catFileSource{repo: r}
	var src objectSource
	switch {
	case kind == "git":
		return cat
	case kind == "go-git":
		return newGoGitSource(r.CommonDir)
	case r.ObjectFormat != "sha1":
		src = cat
	default:
		src = &fallbackSource{primary: cat, secondary: newGoGitSource(r.CommonDir)}
	}
	if loose {
		return r.looseObjectSource(src)
	}
	return src
}
