package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/server"
)

// openEmbeddedBus opens the in-process bus.
func openEmbeddedBus(c *serveConfig, log *slog.Logger) (bus.Bus, func(), error) {
	b, err := memory.New(memory.Options{Partitions: c.partitions, History: c.history, MaxAge: c.historyAge})
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = b.Close() }, nil
}

// openRedisBus opens the Redis bus.
func openRedisBus(ctx context.Context, c *serveConfig, log *slog.Logger) (bus.Bus, func(), error) {
	return nil, nil, errors.New("--redis: the Redis bus is not wired yet")
}

// wireServeExtras adds authorization, the dashboard and the spool drainer.
func wireServeExtras(ctx context.Context, c *serveConfig, opts *server.Options, log *slog.Logger) error {
	return nil
}
