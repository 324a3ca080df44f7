package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/server/fanout"
	"github.com/refcast/refcast/wire"
)

type snapshotResult struct {
	repos  []wire.RepoRefs
	cursor wire.Cursor
}

// snapshot reads the current refs of every repo the filter covers. Its
// cursor is pos raised, per partition, to the lowest Seq any of its repos
// was read at: every event after the cursor may still be news for some
// repo, none before it is (an update a client then receives may already be
// reflected in the snapshot, never the other way round).
func (s *Server) snapshot(ctx context.Context, f *bus.Filter, pos wire.Cursor) (snapshotResult, error) {
	var names []string
	glob := false
	for _, p := range f.Repos {
		if p.Exact() {
			names = append(names, p.String())
		} else {
			glob = true
		}
	}
	var before bus.Heads // for a glob: heads before listing (see below)
	if glob {
		var err error
		if before, err = s.opts.Bus.Heads(ctx); err != nil {
			return snapshotResult{}, fmt.Errorf("read heads: %w", err)
		}
		all, err := s.opts.Bus.Repos(ctx)
		if err != nil {
			return snapshotResult{}, fmt.Errorf("list repos: %w", err)
		}
		names = names[:0]
		for _, r := range all {
			if f.MatchRepo(r) {
				names = append(names, r)
			}
		}
	}
	if len(names) > s.opts.MaxSnapshot {
		return snapshotResult{}, &apiError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("the repo patterns match %d repos, at most %d per snapshot: narrow them", len(names), s.opts.MaxSnapshot)}
	}
	res := snapshotResult{repos: make([]wire.RepoRefs, 0, len(names)), cursor: pos.Clone()}
	type at struct{ seq, chain uint64 }
	low := make(map[int]at)
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		st, err := s.opts.Bus.Refs(ctx, name)
		if err != nil {
			return snapshotResult{}, fmt.Errorf("refs of %s: %w", name, err)
		}
		rr := wire.RepoRefs{Repo: name, Refs: make(map[string]string, len(st.Refs))}
		for ref, id := range st.Refs {
			if f.MatchRef(ref) {
				rr.Refs[ref] = id
			}
		}
		res.repos = append(res.repos, rr)
		if l, ok := low[st.Partition]; !ok || st.Seq < l.seq {
			low[st.Partition] = at{st.Seq, st.Chain}
		}
	}
	for p, l := range low {
		// A repo created after the listing is not in the snapshot: its
		// events must stay after the cursor, so a glob's cursor never rises
		// past the heads read before listing.
		if before != nil && p < len(before) && before[p].Last < l.seq {
			l = at{before[p].Last, before[p].Chain}
		}
		if p < len(res.cursor.Seqs) && l.seq > res.cursor.Seqs[p] {
			res.cursor.Set(p, l.seq, l.chain)
		}
	}
	return res, nil
}

// errNeedsReset says a delta cannot be computed from the history.
var errNeedsReset = errors.New("cursor needs a reset")

// delta collects the filter's net changes per ref after cursor c, and the
// cursor after them.
func (s *Server) delta(ctx context.Context, f *bus.Filter, c wire.Cursor, pos wire.Cursor) ([]wire.Change, wire.Cursor, error) {
	rel := relevantPartitions(f, len(pos.Seqs))
	heads, ok, _ := s.cursorFits(ctx, c, pos, rel)
	if !ok {
		return nil, wire.Cursor{}, errNeedsReset
	}
	next := pos.Clone()
	next.Merge(c)
	type key struct{ repo, ref string }
	at := make(map[key]int)
	var out []wire.Change
	for p, want := range rel {
		if !want {
			continue
		}
		after, check := c.Seqs[p], c.Check(p)
		for after < heads[p].Last {
			evs, err := s.opts.Bus.History(ctx, p, heads[p].Epoch, after, 1000)
			if errors.Is(err, bus.ErrTruncated) {
				return nil, wire.Cursor{}, errNeedsReset
			} else if err != nil {
				return nil, wire.Cursor{}, err
			}
			if len(evs) == 0 {
				break
			}
			for i := range evs {
				ev := &evs[i]
				after, check = ev.Seq, wire.CheckOf(ev.Chain)
				if !f.Match(ev) {
					continue
				}
				if ev.Kind == bus.KindSync {
					return nil, wire.Cursor{}, errNeedsReset
				}
				k := key{ev.Repo, ev.Ref}
				if i, ok := at[k]; ok {
					out[i].New = ev.New
					out[i].Kind = bus.KindOf(out[i].Old, ev.New)
					continue
				}
				at[k] = len(out)
				out = append(out, wire.Change{Repo: ev.Repo, Ref: ev.Ref, Old: ev.Old, New: ev.New, Kind: ev.Kind})
			}
		}
		if after > next.Seqs[p] {
			next.Seqs[p], next.Checks[p] = after, check
		}
	}
	// A ref created and deleted (or changed and changed back) since the
	// cursor has no net change.
	kept := out[:0]
	for _, ch := range out {
		if ch.Old != ch.New {
			kept = append(kept, ch)
		}
	}
	return kept, next, nil
}

// handleRefs serves GET /v1/refs: a snapshot (ETag = cursor, 304 on a
// matching If-None-Match), a delta with since=, and either held as a
// long-poll with wait= until something in the filter changes.
func (s *Server) handleRefs(c echo.Context) error {
	r := c.Request()
	sq, err := s.parseQuery(r, "refs")
	if err != nil {
		return err
	}
	wait, err := parseWait(r.URL.Query().Get(wire.ParamWait), s.opts.MaxWait)
	if err != nil {
		return err
	}
	var inm *wire.Cursor
	inmRaw := ""
	if v := r.Header.Get("If-None-Match"); v != "" && sq.cursor == nil {
		inmRaw = strings.TrimPrefix(strings.Trim(strings.TrimSpace(v), `"`), "W/")
		inmRaw = strings.Trim(inmRaw, `"`)
		if cur, err := wire.DecodeCursor(inmRaw); err == nil {
			inm = &cur
		} // an ETag that is not ours simply does not match
	}
	if wait > 0 && sq.cursor == nil && inm == nil {
		return badRequest(errors.New("wait= needs a cursor: send since= or If-None-Match"))
	}
	base := inm
	if sq.cursor != nil {
		base = sq.cursor
	}

	// A long-poll registers before it looks, so nothing published in
	// between is missed.
	var waiter fanout.Waiter
	if wait > 0 {
		client, anonymous := s.streamClient(r)
		var err error
		if waiter, err = s.engine.Watch(sq.filter, client, anonymous); err != nil {
			return err
		}
		defer waiter.Close()
	}
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		done, err := s.answerRefs(c, sq, base, inmRaw, wait > 0)
		if done || err != nil {
			return err
		}
		select {
		case <-waiter.Notify():
			waiter.Ack()
			if s.engine.Draining() {
				_, err := s.answerRefs(c, sq, base, inmRaw, false)
				return err
			}
		case <-waiter.Done():
			// evicted (it fell behind) or drained: answer with what is known
			_, err := s.answerRefs(c, sq, base, inmRaw, false)
			return err
		case <-deadline:
			return s.notModified(c, base)
		case <-r.Context().Done():
			return nil
		}
	}
}

// answerRefs answers now if there is something to say. With holding set
// (a long-poll), "nothing changed" is not an answer: it returns false.
func (s *Server) answerRefs(c echo.Context, sq *streamQuery, base *wire.Cursor, inmRaw string, holding bool) (bool, error) {
	ctx := c.Request().Context()
	pos, ok := s.engine.Position()
	if !ok {
		return true, fanout.ErrNotReady
	}
	if base != nil {
		// The cheap "no": the client is exactly where the node is.
		if base.Epoch == pos.Epoch && slices.Equal(base.Seqs, pos.Seqs) && sameChecks(*base, pos) {
			if holding {
				return false, nil
			}
			if sq.cursor == nil {
				return true, s.notModified(c, base)
			}
			return true, s.writeDelta(c, nil, *base, base)
		}
		changes, next, err := s.delta(ctx, &sq.filter, *base, pos)
		switch {
		case errors.Is(err, errNeedsReset):
			// fall through to a full snapshot marked reset
		case err != nil:
			return true, err
		case len(changes) == 0 && holding:
			return false, nil
		case len(changes) == 0 && sq.cursor == nil:
			// Nothing in the filter changed: the client's ETag still
			// names the current representation.
			return true, s.notModified(c, base)
		case sq.cursor != nil:
			return true, s.writeDelta(c, changes, next, base)
		}
		if err == nil {
			// If-None-Match that no longer matches: a fresh snapshot.
			return true, s.writeSnapshot(c, sq, pos, false)
		}
		return true, s.writeSnapshot(c, sq, pos, true)
	}
	return true, s.writeSnapshot(c, sq, pos, false)
}

func (s *Server) writeSnapshot(c echo.Context, sq *streamQuery, pos wire.Cursor, reset bool) error {
	snap, err := s.snapshot(c.Request().Context(), &sq.filter, pos)
	if err != nil {
		return err
	}
	cur := snap.cursor.Encode()
	s.cacheHeaders(c, cur)
	outcome := "full"
	if reset {
		outcome = "reset"
		s.metrics.resets.Inc()
	}
	s.metrics.snapshots.WithLabelValues(outcome).Inc()
	body := wire.Snapshot{Cursor: cur, Repos: snap.repos, Reset: reset}
	body.Hint = s.hint(c.Request().Context(), c.Request(), &sq.filter, snap.repos)
	return c.JSON(http.StatusOK, body)
}

func (s *Server) writeDelta(c echo.Context, changes []wire.Change, next wire.Cursor, since *wire.Cursor) error {
	if changes == nil {
		changes = []wire.Change{}
	}
	cur := next.Encode()
	s.cacheHeaders(c, cur)
	s.metrics.snapshots.WithLabelValues("delta").Inc()
	return c.JSON(http.StatusOK, wire.Delta{Changes: changes, Cursor: cur, Since: since.Encode()})
}

func (s *Server) notModified(c echo.Context, base *wire.Cursor) error {
	s.cacheHeaders(c, base.Encode())
	s.metrics.snapshots.WithLabelValues("not_modified").Inc()
	return c.NoContent(http.StatusNotModified)
}

func (s *Server) cacheHeaders(c echo.Context, cursor string) {
	h := c.Response().Header()
	h.Set("ETag", `"`+cursor+`"`)
	scope := "public"
	if s.opts.Auth != nil {
		scope = "private" // answers depend on the credential
	}
	h.Set("Cache-Control", fmt.Sprintf("%s, max-age=%d, must-revalidate", scope, int(s.opts.SnapshotMaxAge/time.Second)))
	h.Set("Vary", "Authorization, Cookie")
}

func parseWait(v string, maxWait time.Duration) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, badRequest(fmt.Errorf("wait must be a duration such as 30s, got %q", bus.Clip(v, 40)))
	}
	if d <= 0 {
		return 0, badRequest(fmt.Errorf("wait must be positive, got %q", bus.Clip(v, 40)))
	}
	return min(d, maxWait), nil
}
