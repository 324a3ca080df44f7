package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/forge"
	"github.com/refcast/refcast/wire"
)

// hookAnswer is the body of a webhook delivery that published nothing.
type hookAnswer struct {
	Status string `json:"status"` // "pong" or "ignored"
	Event  string `json:"event"`
}

// handleHook serves POST /v1/hooks/<forge>: package forge verifies the
// delivery and translates it, and the push goes to the bus as on
// /v1/publish. Pings answer 200 and other events 202, so the forge's
// delivery log shows success; a bus failure answers 503, which the forge
// records as a failed delivery to redeliver (its id makes that safe).
func (s *Server) handleHook(f forge.Forge) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.opts.Webhooks == nil {
			return &apiError{status: http.StatusNotFound, msg: "webhooks are not enabled on this node (refcast serve --webhook-secret-file)"}
		}
		r := c.Request()
		d, err := s.opts.Webhooks.Receive(f, r.Header, r.Body)
		if err != nil {
			return hookError(err)
		}
		switch {
		case d.Ping:
			return c.JSON(http.StatusOK, hookAnswer{Status: "pong", Event: bus.Clip(d.Event, 64)})
		case d.Push == nil:
			return c.JSON(http.StatusAccepted, hookAnswer{Status: "ignored", Event: bus.Clip(d.Event, 64)})
		}
		evs, err := s.opts.Bus.Publish(r.Context(), d.Push)
		if err != nil {
			if errors.Is(err, bus.ErrInvalid) {
				return &apiError{status: http.StatusUnprocessableEntity, msg: err.Error()}
			}
			s.log.Warn("webhook publish failed", "forge", string(f), "repo", d.Push.Repo, "err", err)
			return fmt.Errorf("publish: %w", errors.Join(bus.ErrUnavailable, err))
		}
		s.metrics.published.Add(float64(len(evs)))
		return c.JSON(http.StatusOK, wire.Published{Published: len(evs)})
	}
}

// hookError maps package forge's errors to the answers forges show in
// their delivery logs.
func hookError(err error) error {
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, forge.ErrUnauthorized):
		status = http.StatusUnauthorized
	case errors.Is(err, forge.ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, forge.ErrContentType):
		status = http.StatusUnsupportedMediaType
	case errors.Is(err, forge.ErrUnacceptable):
		status = http.StatusUnprocessableEntity
	}
	return &apiError{status: status, msg: err.Error()}
}
