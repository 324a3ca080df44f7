package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/refcast/refcast/bus"
)

// Bounds of GET /v1/history. A dashboard shows 20 recent events; 100 is
// plenty for any page. The scan budget bounds the bus read of one request
// whatever the filter: 2000 events is about 1 MB of JSON from Redis, split
// over the partitions the filter reads (a glob reads all 16 by default, so
// 125 each), and never fewer than limit per partition.
const (
	DefaultHistoryLimit = 20
	MaxHistoryLimit     = 100
	historyScanBudget   = 2000
)

// handleHistory serves GET /v1/history: the last limit ref events that
// match the filter, oldest first, found among the most recent events of the
// partitions the filter reads. It is a convenience for a page that opens
// with some context; it carries no cursor, and the stream stays the way to
// follow. An event may also arrive on a stream opened afterwards: clients
// deduplicate by (repo, push, ref) as they do for replays.
func (s *Server) handleHistory(c echo.Context) error {
	r := c.Request()
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "repo", "ref", "limit", "access_token":
		default:
			return badRequest(fmt.Errorf("unknown query parameter %q (known: repo, ref, limit)", bus.Clip(k, 40)))
		}
	}
	f, err := bus.ParseFilter(q["repo"], q["ref"])
	if err != nil {
		return badRequest(err)
	}
	limit := DefaultHistoryLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxHistoryLimit {
			return badRequest(fmt.Errorf("limit must be an integer from 1 to %d, got %q", MaxHistoryLimit, bus.Clip(v, 40)))
		}
		limit = n
	}
	if s.opts.Auth != nil {
		if _, err := s.opts.Auth.AuthorizeRead(s.opts.TokenFromRequest(r), &f); err != nil {
			return err
		}
	}
	evs, err := s.recent(r.Context(), &f, limit)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "private, no-cache")
	h.Set("Vary", "Authorization, Cookie")
	return c.JSON(http.StatusOK, map[string]any{"events": evs})
}

// recent reads the tail of each partition the filter reads and keeps the
// last limit matching ref events, ordered by publish time.
func (s *Server) recent(ctx context.Context, f *bus.Filter, limit int) ([]bus.Event, error) {
	heads, err := s.opts.Bus.Heads(ctx)
	if err != nil {
		return nil, fmt.Errorf("read heads: %w", err)
	}
	rel := relevantPartitions(f, len(heads))
	n := 0
	for _, want := range rel {
		if want {
			n++
		}
	}
	window := uint64(max(limit, historyScanBudget/max(n, 1)))
	out := []bus.Event{}
	for p, want := range rel {
		if !want || heads[p].Last < heads[p].First {
			continue // not read, or empty
		}
		after := max(heads[p].First-1, heads[p].Last-min(heads[p].Last, window))
		var found []bus.Event
		for after < heads[p].Last {
			evs, err := s.opts.Bus.History(ctx, p, heads[p].Epoch, after, int(heads[p].Last-after))
			if errors.Is(err, bus.ErrTruncated) {
				break // trimmed or reset since Heads: keep what was found
			} else if err != nil {
				return nil, fmt.Errorf("history of partition %d: %w", p, err)
			}
			if len(evs) == 0 {
				break
			}
			for i := range evs {
				after = evs[i].Seq
				if evs[i].Kind != bus.KindSync && f.Match(&evs[i]) {
					found = append(found, evs[i])
				}
			}
		}
		out = append(out, found[max(0, len(found)-limit):]...)
	}
	slices.SortStableFunc(out, func(a, b bus.Event) int { return a.Time.Compare(b.Time) })
	return out[max(0, len(out)-limit):], nil
}
