//go:build !windows

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/refcast/refcast/auth"
	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/server"
	"github.com/refcast/refcast/web"
)

// openRedisBus opens the Redis bus. Redis need not answer yet: at start as
// during an outage, the node runs and reports not ready until it does.
func openRedisBus(ctx context.Context, c *serveConfig, log *slog.Logger) (bus.Bus, func(), error) {
	// go-redis's own lines (a dial failing in its pool) are warnings in
	// this node's log format; the bus's outage line says what it means.
	routeRedisLog(log.With("component", "redis"), slog.LevelWarn)
	b, err := redis.Dial(c.redis, redis.Options{
		Partitions: c.partitions,
		History:    c.history,
		MaxAge:     c.historyAge,
		Logger:     log.With("component", "redis"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("--redis: %w", err)
	}
	// A Redis that is not up yet (a deployment starting, a failover) is
	// waited for: the node serves /healthz, answers /readyz and new
	// streams 503 until it connects. Anything else (a refused password,
	// a server that is not Redis) is a configuration error: stop now.
	if err := b.Ping(ctx); err != nil {
		if !errors.Is(err, bus.ErrUnavailable) {
			_ = b.Close()
			return nil, nil, fmt.Errorf("--redis %s: %w", b.Redacted(), err)
		}
		log.Warn("Redis is not reachable yet: this node reports not ready until it is", "redis", b.Redacted(), "err", err)
	}
	return b, func() { _ = b.Close() }, nil
}

// wireServeExtras adds authorization and the dashboard. The returned
// function releases what it started.
func wireServeExtras(ctx context.Context, c *serveConfig, opts *server.Options, log *slog.Logger) (func(), error) {
	opts.Dashboard = web.Handler(web.Options{CommitURL: c.commitURL})
	if c.authSecretFile == "" && c.authJWKS == "" {
		if len(c.public) > 0 {
			log.Warn("--public has no effect without --auth-secret-file or --auth-jwks: every repo is readable")
		}
		if c.authIssuer != "" || c.authAudience != "" {
			log.Warn("--auth-issuer and --auth-audience have no effect without --auth-secret-file or --auth-jwks: no token is checked")
		}
		return func() {}, nil
	}
	a, err := auth.New(ctx, auth.Config{
		SecretFile: c.authSecretFile,
		JWKS:       c.authJWKS,
		Public:     c.public,
		Issuer:     c.authIssuer,
		Audience:   c.authAudience,
		Logger:     log.With("component", "auth"),
	})
	if err != nil {
		return nil, fmt.Errorf("authorization: %w", err)
	}
	opts.Auth = authAdapter{a}
	opts.TokenFromRequest = auth.TokenFromRequest
	opts.Subject = a.Subject
	return func() { _ = a.Close() }, nil
}

// authAdapter maps auth's answers onto the server's error kinds.
type authAdapter struct{ a *auth.Authorizer }

var (
	_ server.RepoAuthorizer = authAdapter{}
	_ server.RefAuthorizer  = authAdapter{}
)

func (w authAdapter) AuthorizeRead(token string, f *bus.Filter) (time.Time, error) {
	g, err := w.a.AuthorizeRead(token, f)
	return g.Expires, mapAuthErr(err)
}

// ReadableRepos implements server.RepoAuthorizer.
func (w authAdapter) ReadableRepos(token string) (func(string) bool, error) {
	ok, err := w.a.Readable(token)
	return ok, mapAuthErr(err)
}

// ReadableRefs implements server.RefAuthorizer.
func (w authAdapter) ReadableRefs(token, repo string) (func(string) bool, error) {
	ok, err := w.a.ReadableRefs(token, repo)
	return ok, mapAuthErr(err)
}

func (w authAdapter) AuthorizePublish(token, repo string) error {
	_, err := w.a.AuthorizePublish(token, repo)
	return mapAuthErr(err)
}

func mapAuthErr(err error) error {
	if err == nil {
		return nil
	}
	reason := "access denied"
	var e *auth.Error
	if errors.As(err, &e) {
		reason = e.Reason
	}
	if errors.Is(err, auth.ErrForbidden) {
		return fmt.Errorf("%w: %s", server.ErrForbidden, reason)
	}
	return fmt.Errorf("%w: %s", server.ErrUnauthorized, reason)
}
