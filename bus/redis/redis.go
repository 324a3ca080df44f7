// Package redis is the bus.Bus of a refcast tier: every node and hook of a
// deployment shares one Redis (standalone, Sentinel or Cluster). Each
// partition is a Redis stream holding its bounded history with dense
// sequence numbers, next to the ref state of its repos; a push is appended
// by one Lua script, all or nothing, and idempotently on its push id.
//
// It is not a general Redis client wrapper, and it keeps no state of its own
// beyond connections: everything a node needs to resume is in Redis. See the
// "Redis layout" section of docs/architecture.md for the keys.
package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/bus"
)

// Defaults for Options.
const (
	// DefaultPrefix starts every key.
	DefaultPrefix = "refcast"
	// DefaultPushTTL is how long a push id is remembered for idempotency:
	// long enough to cover a hook's spool being replayed after an outage.
	DefaultPushTTL = 7 * 24 * time.Hour
	// DefaultTimeout bounds one Publish (and each read) round trip.
	DefaultTimeout = 5 * time.Second
	// DefaultBlock is how long one XREAD of a subscription blocks. It bounds
	// how often an idle partition re-checks its epoch and how long
	// Subscription.Close and Bus.Close wait.
	DefaultBlock = 2 * time.Second
	// DefaultFeedBatch is the most events one subscription message carries.
	DefaultFeedBatch = 256
)

// Options configure a Bus. Zero values take the defaults. Every node and
// hook of a deployment must use the same Prefix and Partitions.
type Options struct {
	// Prefix starts every key (DefaultPrefix). Letters, digits and ".:_-".
	Prefix string
	// Partitions is the number of partitions (bus.DefaultPartitions).
	Partitions int
	// History is the most events kept per partition stream
	// (bus.DefaultHistory).
	History int
	// MaxAge also trims events published longer ago than this, a bounded
	// number per publish; 0 trims by count only.
	MaxAge time.Duration
	// PushTTL is how long push ids are remembered (DefaultPushTTL).
	PushTTL time.Duration
	// Timeout bounds each Publish and read call (DefaultTimeout).
	Timeout time.Duration
	// Block is a subscription's XREAD block time (DefaultBlock).
	Block time.Duration
	// Logger receives connection trouble and recoveries; discarded when nil.
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	for _, c := range o.Prefix {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && !strings.ContainsRune(".:_-", c) {
			return fmt.Errorf("redis bus: %w: prefix %q may contain only letters, digits and \".:_-\"", bus.ErrInvalid, o.Prefix)
		}
	}
	if len(o.Prefix) > 64 {
		return fmt.Errorf("redis bus: %w: prefix longer than 64 bytes", bus.ErrInvalid)
	}
	if o.Partitions == 0 {
		o.Partitions = bus.DefaultPartitions
	}
	if err := bus.CheckPartitions(o.Partitions); err != nil {
		return fmt.Errorf("redis bus: %w", err)
	}
	if o.History == 0 {
		o.History = bus.DefaultHistory
	}
	if o.History < 1 {
		return fmt.Errorf("redis bus: %w: history must be positive, got %d", bus.ErrInvalid, o.History)
	}
	if o.MaxAge < 0 {
		return fmt.Errorf("redis bus: %w: max age must not be negative", bus.ErrInvalid)
	}
	if o.PushTTL == 0 {
		o.PushTTL = DefaultPushTTL
	}
	if o.PushTTL < time.Millisecond {
		return fmt.Errorf("redis bus: %w: push ttl must be at least 1ms", bus.ErrInvalid)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Block <= 0 {
		o.Block = DefaultBlock
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Bus is a bus.Bus on Redis. It is safe for concurrent use.
type Bus struct {
	rdb   goredis.UniversalClient // set at construction
	owned bool                    // Close closes rdb; set at construction
	// redacted is the url without its password, for errors; set by Dial.
	redacted string
	opts     Options      // set at construction, defaults applied
	parts    []partKeys   // set at construction
	log      *slog.Logger // set at construction

	ctx    context.Context // cancelled by Close; parent of subscriptions
	cancel context.CancelFunc

	mu     sync.Mutex     // guards closed and subs.Add
	closed bool           //
	subs   sync.WaitGroup // one per live subscription

	meta       string      // "<prefix>:meta"; set at construction
	metaOK     atomic.Bool // the recorded deployment matched (see checkMeta)
	metaLogged atomic.Bool // a mismatch was logged, once per Bus
}

var (
	_ bus.Bus           = (*Bus)(nil)
	_ bus.HealthChecker = (*Bus)(nil)
)

// New returns a Bus on an existing client, which the caller keeps owning:
// Close does not close it. The client should have ContextTimeoutEnabled so
// Timeout reaches the socket, and a pool larger than Partitions times the
// number of live subscriptions (each holds one connection per partition
// while it blocks in XREAD). New does not contact Redis.
func New(client goredis.UniversalClient, opts Options) (*Bus, error) {
	if client == nil {
		return nil, errors.New("redis bus: nil client")
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	b := &Bus{rdb: client, opts: opts, log: opts.Logger, meta: opts.Prefix + ":meta"}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	for i := range opts.Partitions {
		b.parts = append(b.parts, newPartKeys(opts.Prefix, i))
	}
	return b, nil
}

// Open connects to the Redis that url names, checks it answers, and returns
// a Bus that owns the connection. A Redis that cannot be reached gives an
// error wrapping bus.ErrUnavailable; a malformed url, bus.ErrInvalid.
// Errors never contain the password. The url forms are those of Dial.
func Open(ctx context.Context, url string, opts Options) (*Bus, error) {
	b, err := Dial(url, opts)
	if err != nil {
		return nil, err
	}
	if err := b.Ping(ctx); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("redis bus: open %s: %w", b.redacted, err)
	}
	return b, nil
}

// Dial is Open without the check that Redis answers: the Bus connects on
// first use, so a node can start before Redis does and report itself not
// ready until then. Errors never contain the password. The forms are:
//
//	redis://[user:pass@]host[:port][/db]                    standalone
//	rediss://[user:pass@]host[:port][/db]                   standalone over TLS
//	redis-sentinel://[user:pass@]h1:p1,h2:p2/MASTER[?db=N]  Sentinel (rediss-sentinel: TLS)
//	redis-cluster://[user:pass@]h1:p1,h2:p2                 Cluster seeds (rediss-cluster: TLS)
//	redis://[user:pass@]h1:p1,redis://h2:p2                 Cluster seeds too
//
// user may be empty or an ACL user. With Sentinel, user:pass authenticate to
// the master and replicas; the query parameters sentinel_user and
// sentinel_password to the Sentinels. TLS always verifies the servers'
// certificates, against the system roots or, with the query parameter
// tls_ca_file=/path/ca.pem, against the CAs in that PEM file (read by Dial;
// a missing or empty file is bus.ErrInvalid). In a seed list the first
// URL's tls_ca_file applies to all.
func Dial(url string, opts Options) (*Bus, error) {
	cfg, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	if err := cfg.loadCA(); err != nil {
		return nil, err
	}
	if opts.Partitions == 0 {
		opts.Partitions = bus.DefaultPartitions
	}
	// Every subscription blocks one connection per partition; leave room for
	// publishes and reads beside one or two of them.
	cfg.Options.PoolSize = max(2*opts.Partitions+10, 10*runtime.GOMAXPROCS(0))
	cfg.Options.ContextTimeoutEnabled = true
	client := cfg.client()
	b, err := New(client, opts)
	if err != nil {
		client.Close()
		return nil, err
	}
	b.owned = true
	b.redacted = cfg.Redacted
	return b, nil
}

// Partitions implements bus.Bus.
func (b *Bus) Partitions() int { return len(b.parts) }

// Redacted is the url the Bus was dialled with, without its password;
// empty for a Bus made by New.
func (b *Bus) Redacted() string { return b.redacted }

// Ping implements bus.HealthChecker: one round trip to Redis.
func (b *Bus) Ping(ctx context.Context) error {
	if b.isClosed() {
		return bus.ErrClosed
	}
	// The first successful round trip checks the deployment's layout, so
	// a node given the wrong --partitions never reports ready.
	if err := b.checkMeta(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	return b.wrap("ping", b.rdb.Ping(ctx).Err())
}

// Close implements bus.Bus: it ends every subscription, waits for their
// goroutines (at most about Options.Block), and closes the client if Open
// created it. Safe to call twice.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.subs.Wait()
	if b.owned {
		if err := b.rdb.Close(); err != nil {
			return fmt.Errorf("redis bus: close: %w", err)
		}
	}
	return nil
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// wrap names the operation and marks errors meaning Redis could not be
// reached (or answer in time) with bus.ErrUnavailable.
func (b *Bus) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("redis bus: %s: %w", op, err)
	case unavailable(err):
		return fmt.Errorf("redis bus: %s: %w: %w", op, bus.ErrUnavailable, err)
	}
	return fmt.Errorf("redis bus: %s: %w", op, err)
}

// unavailable reports whether err says Redis is unreachable or temporarily
// unable to serve, as opposed to refusing the command itself.
func unavailable(err error) bool {
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, goredis.ErrPoolTimeout), errors.Is(err, goredis.ErrClosed),
		goredis.IsLoadingError(err), goredis.IsReadOnlyError(err), goredis.IsClusterDownError(err),
		goredis.IsTryAgainError(err), goredis.IsMasterDownError(err),
		goredis.HasErrorPrefix(err, "BUSY"), goredis.HasErrorPrefix(err, "OOM"),
		// min-replicas-to-write unmet (a replica reconnecting) and a
		// primary that cannot persist (stop-writes-on-bgsave-error): both
		// pass, and the push must be retried, not refused.
		goredis.HasErrorPrefix(err, "NOREPLICAS"), goredis.HasErrorPrefix(err, "MISCONF"):
		return true
	}
	return false
}
