package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// newLogger builds the logger of serve and watch from --log-level and
// --log-format. Durations are written as strings ("10s", not 10000000000
// nanoseconds) in both formats, so an operator reads them as written in flags.
func newLogger(level, format string, env Env) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{msg: fmt.Sprintf("--log-level: %q is not debug, info, warn or error", level)}
	}
	o := &slog.HandlerOptions{Level: l, ReplaceAttr: durationsAsStrings}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, o)), nil
	}
	return nil, usageError{msg: fmt.Sprintf("--log-format: %q is not text or json", format)}
}

// durationsAsStrings is a slog.HandlerOptions.ReplaceAttr that writes a
// time.Duration in its String form: the JSON handler otherwise writes an
// integer count of nanoseconds.
func durationsAsStrings(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// redisLogger adapts go-redis's process-global logger (redis.SetLogger) to a
// slog.Logger, so its lines ("failed to dial after 5 attempts") come out in
// the command's format, one line each, instead of as plain text on stderr.
type redisLogger struct {
	log   *slog.Logger
	level slog.Level
}

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if !r.log.Enabled(ctx, r.level) {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	r.log.Log(ctx, r.level, "go-redis: "+msg)
}

// routeRedisLog sends go-redis's own log lines through log at level. The
// logger is a process global of go-redis, so only command wiring sets it,
// once per process (serve and hook are separate processes).
func routeRedisLog(log *slog.Logger, level slog.Level) {
	goredis.SetLogger(redisLogger{log: log, level: level})
}
