package server

import (
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// maxLoggedQuery bounds the query string an access line carries: a filter
// of many repos is still recognisable in 512 bytes, and a client cannot
// make one line arbitrarily long.
const maxLoggedQuery = 512

// accessLog is middleware that logs, at info level, one line per request
// when Options.AccessLog is set, and every 401 and 403 whatever it is, with
// the reason the client was given. A line never carries a credential: the
// query loses its token-like parameters (loggedQuery), headers and cookies
// are not logged, and the token is named by its subject only.
//
// A stream's line is written when its handler returns: for a hijacked
// stream that is once the stream is handed to the fan-out engine.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			// Answer now, so the line has the status the client got;
			// echo's own call of httpError finds the response committed.
			c.Error(err)
		}
		status := c.Response().Status
		denied := status == http.StatusUnauthorized || status == http.StatusForbidden
		if !s.opts.AccessLog && !denied {
			return nil
		}
		r := c.Request()
		attrs := make([]slog.Attr, 0, 9)
		attrs = append(attrs,
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
		)
		if q := loggedQuery(r.URL.RawQuery); q != "" {
			attrs = append(attrs, slog.String("query", q))
		}
		attrs = append(attrs,
			slog.Int("status", status),
			slog.String("duration", time.Since(start).String()), // a string whatever the handler
			slog.Int64("bytes", c.Response().Size),
			slog.String("remote", s.clientKey(r)),
		)
		if sub := s.subject(r); sub != "" {
			attrs = append(attrs, slog.String("sub", sub))
		}
		msg := "request"
		if denied {
			msg = "request denied"
			if err != nil {
				attrs = append(attrs, slog.String("reason", statusOf(err).msg))
			}
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, msg, attrs...)
		return nil
	}
}

// subject is the sub of the request's token when it verifies, else "".
func (s *Server) subject(r *http.Request) string {
	if s.opts.Subject == nil {
		return ""
	}
	tok := s.opts.TokenFromRequest(r)
	if tok == "" {
		return ""
	}
	return s.opts.Subject(tok)
}

// loggedQuery is the raw query without the parameters that may carry a
// credential (access_token, and any whose name contains token, secret or
// password), cut to maxLoggedQuery bytes. An unparsable query is replaced
// by a placeholder: it cannot be filtered, so it is not logged.
func loggedQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "(unparsable)"
	}
	for k := range q {
		if secretParam(k) {
			q.Del(k)
		}
	}
	out := q.Encode()
	if len(out) > maxLoggedQuery {
		out = out[:maxLoggedQuery] + "…"
	}
	return out
}

func secretParam(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"token", "secret", "password", "passwd", "key"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}
