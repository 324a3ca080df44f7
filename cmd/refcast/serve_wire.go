package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/server"
	"github.com/refcast/refcast/web"
)

// openRedisBus opens the Redis bus.
func openRedisBus(ctx context.Context, c *serveConfig, log *slog.Logger) (bus.Bus, func(), error) {
	return nil, nil, errors.New("--redis: the Redis bus is not wired yet")
}

// wireServeExtras adds authorization, the dashboard and the spool drainer.
func wireServeExtras(ctx context.Context, c *serveConfig, opts *server.Options, log *slog.Logger) error {
	opts.Dashboard = web.Handler(web.Options{CommitURL: c.commitURL})
	return nil
}
