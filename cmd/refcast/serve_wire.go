package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/server"
	"github.com/refcast/refcast/web"
)

// openRedisBus opens the Redis bus. A node starts even if Redis is down
// (it reports not ready and keeps retrying); only a malformed URL or
// option is fatal.
func openRedisBus(ctx context.Context, c *serveConfig, log *slog.Logger) (bus.Bus, func(), error) {
	b, err := redis.Open(ctx, c.redis, redis.Options{
		Partitions: c.partitions,
		History:    c.history,
		MaxAge:     c.historyAge,
		Logger:     log.With("component", "redis"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("--redis: %w", err)
	}
	return b, func() { _ = b.Close() }, nil
}

// wireServeExtras adds authorization, the dashboard and the spool drainer.
func wireServeExtras(ctx context.Context, c *serveConfig, opts *server.Options, log *slog.Logger) error {
	opts.Dashboard = web.Handler(web.Options{CommitURL: c.commitURL})
	return nil
}
