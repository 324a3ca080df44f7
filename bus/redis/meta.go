package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/bus"
)

// ErrMismatch is returned, wrapped with both sides' numbers, when the Redis
// already holds a deployment whose partition count (or key layout) differs
// from this Bus's options. Such a Bus would read and write other partitions
// than its peers: nodes would serve empty snapshots and no events while
// reporting ready, so every operation refuses instead. It is a
// configuration error, never bus.ErrUnavailable: retrying does not help.
var ErrMismatch = errors.New("redis holds another deployment")

// layoutVersion names the key layout of keys.go. It changes only when keys
// change meaning, so that a node of another layout refuses a Redis instead
// of misreading it.
const layoutVersion = "1"

// metaScript records the deployment's partition count and layout on first
// use and returns what is recorded. One key, so one slot on a Cluster; a
// script, so two nodes starting at once cannot record different counts.
//
// KEYS: 1 <prefix>:meta. ARGV: 1 partitions, 2 layout.
// Returns {partitions, layout}.
var metaScript = goredis.NewScript(`
redis.call('HSETNX', KEYS[1], 'partitions', ARGV[1])
redis.call('HSETNX', KEYS[1], 'layout', ARGV[2])
return redis.call('HMGET', KEYS[1], 'partitions', 'layout')
`)

// checkMeta makes sure this Redis is this deployment's: on the first call
// that reaches Redis it records the partition count (first use) or compares
// it with the recorded one. Every operation calls it first; once it has
// succeeded it costs an atomic load. A Redis that cannot be reached is
// bus.ErrUnavailable as for any operation, and is checked again next time.
func (b *Bus) checkMeta(ctx context.Context) error {
	if b.metaOK.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	res, err := metaScript.Run(ctx, b.rdb, []string{b.meta}, len(b.parts), layoutVersion).StringSlice()
	if err != nil {
		return b.wrap("check deployment layout", err)
	}
	if err := b.compareMeta(res); err != nil {
		if !b.metaLogged.Swap(true) {
			b.log.Error("refusing this Redis: it holds another deployment", "key", b.meta, "err", err)
		}
		return err
	}
	b.metaOK.Store(true)
	return nil
}

// compareMeta checks the recorded {partitions, layout} against ours.
func (b *Bus) compareMeta(res []string) error {
	if len(res) != 2 {
		return fmt.Errorf("redis bus: check deployment layout: %w: %s holds %d fields, want 2", ErrMismatch, b.meta, len(res))
	}
	if res[1] != layoutVersion {
		return fmt.Errorf("redis bus: %w: this Redis holds key layout %q under prefix %q, this refcast uses layout %q: run the refcast version that wrote it, or give this deployment its own Redis or database (redis://host/N)",
			ErrMismatch, bus.Clip(res[1], 32), b.opts.Prefix, layoutVersion)
	}
	n, err := strconv.Atoi(res[0])
	if err != nil {
		return fmt.Errorf("redis bus: %w: %s records partitions %q, not a number: delete the key if nothing else uses this Redis", ErrMismatch, b.meta, bus.Clip(res[0], 32))
	}
	if n != len(b.parts) {
		return fmt.Errorf("redis bus: %w: this Redis holds a deployment with %d partitions under prefix %q; %d partitions were given (--partitions %d): use --partitions %d, or give this deployment its own Redis or database (redis://host/N)",
			ErrMismatch, n, b.opts.Prefix, len(b.parts), len(b.parts), n)
	}
	return nil
}
