package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

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

// redisRepeatWindow is how long a go-redis line identical to the last one
// is counted instead of written. During an outage every pooled dial fails
// the same way, several times a second per partition (16 by default); one
// line a minute, with the count, says as much.
const redisRepeatWindow = time.Minute

// redisLogger adapts go-redis's process-global logger (redis.SetLogger) to a
// slog.Logger, so its lines ("failed to dial after 5 attempts") come out in
// the command's format, one line each, instead of as plain text on stderr.
// A line repeating the previous one within redisRepeatWindow is counted,
// not written; the count is written, as "repeated" on that line's text,
// when the window has passed or another line comes. Its state is
// one string and two numbers under a mutex: no goroutine, no queue.
type redisLogger struct {
	log   *slog.Logger
	level slog.Level
	now   func() time.Time

	mu       sync.Mutex
	last     string    // the last line written
	at       time.Time // when it was written
	repeated int       // identical lines since, not written
}

func (r *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if !r.log.Enabled(ctx, r.level) {
		return
	}
	msg := "go-redis: " + strings.TrimSpace(fmt.Sprintf(format, v...))
	r.mu.Lock()
	now := r.now()
	if msg == r.last && now.Sub(r.at) < redisRepeatWindow {
		r.repeated++
		r.mu.Unlock()
		return
	}
	last, repeated := r.last, r.repeated
	r.last, r.at, r.repeated = msg, now, 0
	r.mu.Unlock()
	switch {
	case repeated > 0 && last == msg:
		r.log.Log(ctx, r.level, msg, "repeated", repeated)
	case repeated > 0: // close the run of the previous line first
		r.log.Log(ctx, r.level, last, "repeated", repeated)
		fallthrough
	default:
		r.log.Log(ctx, r.level, msg)
	}
}

// routeRedisLog sends go-redis's own log lines through log at level. The
// logger is a process global of go-redis, so only command wiring sets it,
// once per process (serve and hook are separate processes).
func routeRedisLog(log *slog.Logger, level slog.Level) {
	goredis.SetLogger(&redisLogger{log: log, level: level, now: time.Now})
}
