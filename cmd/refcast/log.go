package main

import (
	"fmt"
	"log/slog"
)

// newLogger builds the logger of serve and watch from --log-level and
// --log-format.
func newLogger(level, format string, env Env) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{msg: fmt.Sprintf("--log-level: %q is not debug, info, warn or error", level)}
	}
	o := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, o)), nil
	}
	return nil, usageError{msg: fmt.Sprintf("--log-format: %q is not text or json", format)}
}
