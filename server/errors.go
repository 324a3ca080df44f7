package server

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/server/fanout"
	"github.com/refcast/refcast/wire"
)

// apiError is an error with the status and message a client should see.
type apiError struct {
	status int
	msg    string
	retry  int // seconds for Retry-After, when > 0
}

func (e *apiError) Error() string { return e.msg }

func badRequest(err error) error {
	return &apiError{status: http.StatusBadRequest, msg: err.Error()}
}

// statusOf maps every error the handlers return to one HTTP answer. This is
// the only place that decides; messages of internal errors are not shown.
func statusOf(err error) *apiError {
	var ae *apiError
	var he *echo.HTTPError
	var rl *rateLimitError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &rl):
		return &apiError{status: http.StatusTooManyRequests, msg: rl.Error(), retry: rl.retry}
	case errors.Is(err, bus.ErrInvalid), errors.Is(err, wire.ErrBadCursor):
		return &apiError{status: http.StatusBadRequest, msg: err.Error()}
	case errors.Is(err, ErrUnauthorized):
		return &apiError{status: http.StatusUnauthorized, msg: err.Error()}
	case errors.Is(err, ErrForbidden):
		return &apiError{status: http.StatusForbidden, msg: err.Error()}
	case errors.Is(err, fanout.ErrTooManyConnections), errors.Is(err, fanout.ErrTooManyForClient),
		errors.Is(err, fanout.ErrDraining), errors.Is(err, fanout.ErrNotReady):
		return &apiError{status: http.StatusServiceUnavailable, msg: err.Error(), retry: 1 + rand.IntN(5)}
	case errors.Is(err, bus.ErrUnavailable), errors.Is(err, bus.ErrClosed):
		return &apiError{status: http.StatusServiceUnavailable, msg: "the event bus is unavailable, retry later", retry: 2 + rand.IntN(5)}
	case errors.As(err, &he):
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok {
			msg = s
		}
		return &apiError{status: he.Code, msg: msg}
	}
	return &apiError{status: http.StatusInternalServerError, msg: "internal error"}
}

// httpError is echo's error handler: a JSON body for every failure.
func (s *Server) httpError(err error, c echo.Context) {
	ae := statusOf(err)
	if ae.status >= 500 && ae.status != http.StatusServiceUnavailable {
		s.log.Error("request failed", "path", c.Path(), "err", err)
	}
	if c.Response().Committed {
		return
	}
	if ae.retry > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(ae.retry))
	}
	_ = c.JSON(ae.status, wire.Error{Error: ae.msg, Status: ae.status})
}
