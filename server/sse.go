package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/server/fanout"
	"github.com/refcast/refcast/wire"
)

// streamQuery is a validated /v1/events or /v1/refs request.
type streamQuery struct {
	filter  bus.Filter
	latest  bool
	cursor  *wire.Cursor // nil when the client sent none
	expires time.Time
	hint    string // for the hello: see Server.hint
}

// allowedParams lists the query parameters each endpoint knows; anything
// else is refused so a typo ("repos=") is not silently ignored.
var allowedParams = map[string]map[string]bool{
	"events": {wire.ParamRepo: true, wire.ParamRef: true, wire.ParamSince: true, wire.ParamMode: true, wire.ParamAccessToken: true},
	"refs":   {wire.ParamRepo: true, wire.ParamRef: true, wire.ParamSince: true, wire.ParamWait: true, wire.ParamAccessToken: true},
}

func (s *Server) parseQuery(r *http.Request, endpoint string) (*streamQuery, error) {
	q := r.URL.Query()
	for k := range q {
		if !allowedParams[endpoint][k] {
			return nil, badRequest(fmt.Errorf("unknown query parameter %q", bus.Clip(k, 40)))
		}
	}
	f, err := bus.ParseFilter(q[wire.ParamRepo], q[wire.ParamRef])
	if err != nil {
		return nil, badRequest(err)
	}
	sq := &streamQuery{filter: f}
	switch m := q.Get(wire.ParamMode); m {
	case "", wire.ModeAll:
	case wire.ModeLatest:
		sq.latest = true
	default:
		return nil, badRequest(fmt.Errorf("mode must be \"all\" or \"latest\", got %q", bus.Clip(m, 40)))
	}
	raw := r.Header.Get(wire.HeaderLastEventID)
	if raw == "" {
		raw = q.Get(wire.ParamSince)
	}
	if raw != "" {
		c, err := wire.DecodeCursor(raw)
		if err != nil {
			return nil, badRequest(fmt.Errorf("cursor: %w", err))
		}
		sq.cursor = &c
	}
	if s.opts.Auth != nil {
		exp, err := s.opts.Auth.AuthorizeRead(s.opts.TokenFromRequest(r), &sq.filter)
		if err != nil {
			return nil, err
		}
		sq.expires = exp
	}
	return sq, nil
}

// relevantPartitions marks the partitions a filter can receive events
// from: those of its exact repos, or all of them if it has a glob.
func relevantPartitions(f *bus.Filter, n int) []bool {
	rel := make([]bool, n)
	for _, p := range f.Repos {
		if !p.Exact() {
			for i := range rel {
				rel[i] = true
			}
			return rel
		}
		rel[bus.PartitionOf(p.String(), n)] = true
	}
	return rel
}

// handleEvents serves GET /v1/events. Once the request is validated and
// registered, an HTTP/1.1 connection is hijacked: the node writes the
// response head itself and hands the socket to the engine, and the handler's
// goroutine and buffers go away. HTTP/2 streams stay on this goroutine.
func (s *Server) handleEvents(c echo.Context) error {
	r := c.Request()
	sq, err := s.parseQuery(r, "events")
	if err != nil {
		return err
	}
	if sq.cursor == nil { // a resuming client was told at its first hello
		sq.hint = s.hint(r.Context(), r, &sq.filter, nil)
	}
	client, anonymous := s.streamClient(r)
	hj, canHijack := c.Response().Writer.(http.Hijacker)
	hijack := canHijack && !s.opts.DisableHijack && r.ProtoMajor == 1
	sub, pos, err := s.engine.Register(fanout.Spec{Filter: sq.filter, Latest: sq.latest, Expires: sq.expires, Client: client, Anonymous: anonymous, Handler: !hijack})
	if errors.Is(err, fanout.ErrDraining) {
		return s.bounce(c)
	}
	if err != nil {
		return err
	}
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.Debug("stream opened", "client", client, "repos", len(sq.filter.Repos),
			"resume", sq.cursor != nil, "hijacked", hijack, "latest", sq.latest)
	}
	if hijack {
		return s.streamHijacked(r, hj, sub, sq, pos)
	}
	return s.streamHTTP(c, sub, sq, pos)
}

// bounce answers a stream request reaching a draining node with an empty
// stream that only says when to come back: a balancer that has not yet
// noticed the drain sends the reconnect elsewhere, and an EventSource,
// which gives up for good on a non-200 answer, keeps trying.
func (s *Server) bounce(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	c.Response().WriteHeader(http.StatusOK)
	_, err := c.Response().Write(wire.AppendRetry(nil, s.engine.JitteredRetry()))
	return err
}

func (s *Server) streamHijacked(r *http.Request, hj http.Hijacker, sub fanout.Stream, sq *streamQuery, pos wire.Cursor) error {
	conn, rw, err := hj.Hijack()
	if err != nil {
		sub.Remove(fanout.ReasonClosed)
		return fmt.Errorf("hijack: %w", err)
	}
	conn = unwrapFramingConn(conn) // no request follows a hijacked stream
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(time.Minute)
	}
	if !sub.Attach(conn) {
		return nil // removed while we were hijacking; Attach closed conn
	}
	_ = conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	w := rw.Writer
	fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n%s\r\n", s.corsHeaders(r))
	floor, err := s.replay(r.Context(), w, sq, pos)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sub.Remove(fanout.ReasonWriteError)
		s.log.Debug("stream setup failed", "err", err)
		return nil // the connection is ours now: nothing more to answer
	}
	_ = conn.SetWriteDeadline(time.Time{}) // writers arm their own when a socket is full
	sub.GoLive(floor)
	return nil
}

func (s *Server) streamHTTP(c echo.Context, sub fanout.Stream, sq *streamQuery, pos wire.Cursor) error {
	r, w := c.Request(), c.Response().Writer
	defer sub.Remove(fanout.ReasonClientGone)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	bw := bufio.NewWriter(w)
	floor, err := s.replay(r.Context(), bw, sq, pos)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = rc.Flush()
	}
	if err != nil {
		return nil
	}
	sub.GoLive(floor)
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-sub.Done():
			return nil
		case <-sub.Wake():
			if !sub.FlushHTTP(w, rc) {
				return nil
			}
		}
	}
}

// replay writes the stream's opening: the retry hint, then either the
// events the client missed (from the history, up to pos, where live frames
// take over) or a reset with the current snapshot, then a hello carrying the
// client's new cursor. It returns the floor below which queued live events
// must be dropped because the client already has them (nil if none).
func (s *Server) replay(ctx context.Context, w io.Writer, sq *streamQuery, pos wire.Cursor) (*wire.Cursor, error) {
	if _, err := w.Write(wire.AppendRetry(nil, s.engine.JitteredRetry())); err != nil {
		return nil, err
	}
	out := pos.Clone()
	var floor *wire.Cursor
	if sq.cursor != nil {
		rel := relevantPartitions(&sq.filter, len(pos.Seqs))
		// A client that is up to date (the common reconnect, and a whole
		// fleet moving off a draining node) has nothing to replay: it
		// costs the bus no read at all.
		ok, reason := cursorCurrent(*sq.cursor, pos, rel), ""
		if !ok {
			_, ok, reason = s.cursorFits(ctx, *sq.cursor, pos, rel)
			if ok {
				err := s.replayHistory(ctx, w, &sq.filter, sq.cursor.Clone(), pos, rel)
				if errors.Is(err, bus.ErrTruncated) {
					ok, reason = false, "the history was trimmed while replaying"
				} else if err != nil {
					return nil, err
				}
			}
		}
		if ok {
			s.metrics.replays.Inc()
			out.Merge(*sq.cursor)
			if !wire.AtLeast(pos.Seqs, sq.cursor.Seqs) {
				fl := out
				floor = &fl
			}
		}
		if !ok {
			snap, err := s.snapshot(ctx, &sq.filter, pos)
			if err != nil {
				return nil, err
			}
			s.metrics.resets.Inc()
			out = snap.cursor
			if !wire.AtLeast(pos.Seqs, out.Seqs) {
				fl := out
				floor = &fl
			}
			data, _ := json.Marshal(wire.Reset{Cursor: out.Encode(), Reason: reason, Repos: snap.repos})
			if _, err := w.Write(wire.AppendFrame(nil, wire.EventReset, out, data)); err != nil {
				return nil, err
			}
		}
	}
	hello, _ := json.Marshal(wire.Hello{Cursor: out.Encode(), Hint: sq.hint})
	_, err := w.Write(wire.AppendFrame(nil, wire.EventHello, out, hello))
	return floor, err
}

// cursorFits checks a client cursor against the node's epochs and the bus's
// retained history for the partitions the filter reads: the epochs, the
// range, and that the history still holds, up to each Seq, the events the
// client saw (its check is the bus's chain there). The last catches a
// store that came back from an older copy (an RDB snapshot, a lagging
// replica, a restored file) under the same epoch, with new pushes on the
// Seqs it lost: without it the client would resume past events it never
// got. It returns the heads it read (nil when it did not get that far),
// for a caller that goes on to read the history.
func (s *Server) cursorFits(ctx context.Context, c wire.Cursor, pos wire.Cursor, rel []bool) (bus.Heads, bool, string) {
	if len(c.Seqs) != len(pos.Seqs) {
		return nil, false, fmt.Sprintf("cursor is for %d partitions, this deployment has %d", len(c.Seqs), len(pos.Seqs))
	}
	if c.Epoch != pos.Epoch {
		return nil, false, "the history the cursor points into was lost (new epoch)"
	}
	heads, err := s.opts.Bus.Heads(ctx)
	if err != nil {
		return nil, false, "the history could not be read"
	}
	if ok, reason := c.Fits(heads, rel); !ok {
		return heads, false, reason
	}
	for p, want := range rel {
		seq := c.Seqs[p]
		if !want || seq == 0 || seq == heads[p].Last {
			continue // nothing seen, or checked by Fits against the head
		}
		if seq == pos.Seqs[p] && c.Check(p) == pos.Check(p) {
			continue // where this node is: it read that history itself
		}
		// The entry after seq names the chain before it; Fits made sure
		// seq+1 is retained and published.
		evs, err := s.opts.Bus.History(ctx, p, heads[p].Epoch, seq, 1)
		switch {
		case errors.Is(err, bus.ErrTruncated):
			return heads, false, "the history the cursor points into was trimmed or lost"
		case err != nil:
			return heads, false, "the history could not be read"
		case len(evs) == 0 || evs[0].Seq != seq+1 || !c.CheckFits(p, evs[0].Prev):
			return heads, false, wire.ReasonRewound
		}
	}
	return heads, true, ""
}

// replayHistory writes the filter's events in (at, pos] for each relevant
// partition, advancing at as it goes so every id is a valid cursor.
func (s *Server) replayHistory(ctx context.Context, w io.Writer, f *bus.Filter, at wire.Cursor, pos wire.Cursor, rel []bool) error {
	buf := make([]byte, 0, 1024)
	for p, want := range rel {
		if !want {
			continue
		}
		for at.Seqs[p] < pos.Seqs[p] {
			evs, err := s.opts.Bus.History(ctx, p, s.engine.Epoch(p), at.Seqs[p], 500)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				break
			}
			for i := range evs {
				ev := &evs[i]
				if ev.Seq > pos.Seqs[p] {
					break
				}
				at.Set(p, ev.Seq, ev.Chain)
				if !f.Match(ev) {
					continue
				}
				buf = wire.AppendEventFrame(buf[:0], wire.EventName(ev), at, ev)
				if _, err := w.Write(buf); err != nil {
					return err
				}
			}
		}
		if pos.Seqs[p] > at.Seqs[p] {
			at.Seqs[p], at.Checks[p] = pos.Seqs[p], pos.Check(p)
		}
	}
	return nil
}

// streamClient is the key streams and long-polls count against for the
// per-client limits, the rate limits' (IP, IPv6 /64), and whether the
// client is anonymous: it showed no credential, or the node checks none.
func (s *Server) streamClient(r *http.Request) (key string, anonymous bool) {
	return s.rateKey(r), s.opts.Auth == nil || s.opts.TokenFromRequest(r) == ""
}

// clientKey identifies a client for per-client limits: its IP. Behind a
// trusted proxy (Options.TrustedProxies) it is the right-most address in
// X-Forwarded-For that is not itself a trusted proxy; otherwise every
// client of a load balancer would share one key.
func (s *Server) clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(s.opts.TrustedProxies) == 0 || !s.trusted(host) {
		return host
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return host // a malformed chain: do not guess
			}
			if !s.trusted(a.String()) {
				return a.Unmap().String()
			}
		}
	}
	return host
}

func (s *Server) trusted(host string) bool {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
