package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var prefixes atomic.Int64

// uniquePrefix lets parallel tests share one Redis without seeing each
// other's keys.
func uniquePrefix() string { return fmt.Sprintf("t%d", prefixes.Add(1)) }

// open returns a bus on url with test-friendly timings, closed in Cleanup.
func open(t testing.TB, url string, opts redis.Options) *redis.Bus {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = uniquePrefix()
	}
	if opts.Block == 0 {
		opts.Block = 200 * time.Millisecond
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redis.Open(ctx, url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func factory(url string) bustest.Factory {
	return func(t *testing.T, o bustest.Options) bus.Bus {
		return open(t, url, redis.Options{Partitions: o.Partitions, History: o.History, MaxAge: o.MaxAge})
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	bustest.Run(t, factory(srv.URL()))
}

func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	t.Run("suite", func(t *testing.T) { bustest.Run(t, factory(c.URL())) })

	// Partitions land on different shards.
	ctx := t.Context()
	shards := 0
	for _, s := range c.Servers {
		if n, err := s.Client().DBSize(ctx).Result(); err == nil && n > 0 {
			shards++
		}
	}
	if shards < 2 {
		t.Errorf("keys landed on %d of %d shards, want at least 2", shards, len(c.Servers))
	}

	// A seed list of redis:// URLs works too.
	var seeds []string
	for _, a := range c.Addrs() {
		seeds = append(seeds, "redis://"+a)
	}
	b := open(t, strings.Join(seeds, ","), redis.Options{Partitions: 8})
	for i := range 20 {
		if _, err := b.Publish(ctx, bustest.Push(fmt.Sprintf("p%d", i), fmt.Sprintf("acme/r%d", i), "refs/heads/main", bustest.ID(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	repos, err := b.Repos(ctx)
	if err != nil || len(repos) != 20 {
		t.Errorf("repos over a seed list = %d, %v; want 20", len(repos), err)
	}
}

func TestACLUser(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{User: "refcast", Password: "s3cret-pw"})
	b := open(t, srv.URL(), redis.Options{Partitions: 2})
	if _, err := b.Publish(t.Context(), bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))); err != nil {
		t.Fatalf("publish as ACL user: %v", err)
	}
	if err := b.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	bad := strings.Replace(srv.URL(), "s3cret-pw", "wr0ng-pw", 1)
	_, err := redis.Open(t.Context(), bad, redis.Options{})
	if err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wr0ng-pw") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestPasswordDefaultUser(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Password: "pa55"})
	b := open(t, srv.URL(), redis.Options{Partitions: 1})
	if err := b.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	url := srv.URL()
	b := open(t, url, redis.Options{Partitions: 2, Timeout: 500 * time.Millisecond})
	srv.Kill()

	ctx := t.Context()
	if _, err := b.Publish(ctx, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))); !errors.Is(err, bus.ErrUnavailable) {
		t.Errorf("Publish to a dead Redis: err = %v, want ErrUnavailable", err)
	}
	if _, err := b.Heads(ctx); !errors.Is(err, bus.ErrUnavailable) {
		t.Errorf("Heads: err = %v, want ErrUnavailable", err)
	}
	if err := b.Ping(ctx); !errors.Is(err, bus.ErrUnavailable) {
		t.Errorf("Ping: err = %v, want ErrUnavailable", err)
	}
	// Validation comes first: an invalid push is ErrInvalid even now.
	if _, err := b.Publish(ctx, bustest.Push("p 2", "acme/app", "refs/heads/main", bustest.ID(1))); !errors.Is(err, bus.ErrInvalid) {
		t.Errorf("invalid push: err = %v, want ErrInvalid", err)
	}
	if _, err := redis.Open(ctx, url, redis.Options{Timeout: 500 * time.Millisecond}); !errors.Is(err, bus.ErrUnavailable) {
		t.Errorf("Open on a dead Redis: err = %v, want ErrUnavailable", err)
	}
}

// TestEpochExact: epochs near 2^63 survive every script as strings.
func TestEpochExact(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	const epoch = uint64(1<<63 - 3) // not representable as a double
	prefix := uniquePrefix()
	if err := srv.Client().Set(t.Context(), prefix+":{p0}:epoch", epoch, 0).Err(); err != nil {
		t.Fatal(err)
	}
	b := open(t, srv.URL(), redis.Options{Prefix: prefix, Partitions: 1})
	if _, err := b.Publish(t.Context(), bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))); err != nil {
		t.Fatal(err)
	}
	h, err := b.Heads(t.Context())
	if err != nil || h[0].Epoch != epoch {
		t.Fatalf("epoch = %d, %v; want %d", h[0].Epoch, err, epoch)
	}
	st, err := b.Refs(t.Context(), "acme/app")
	if err != nil || st.Epoch != epoch {
		t.Errorf("refs epoch = %d, %v; want %d", st.Epoch, err, epoch)
	}
	if evs, err := b.History(t.Context(), 0, epoch, 0, 10); err != nil || len(evs) != 1 {
		t.Errorf("history at the exact epoch = %d events, %v", len(evs), err)
	}
}

// TestKeyLayout pins the documented keys (docs/architecture.md).
func TestKeyLayout(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	b := open(t, srv.URL(), redis.Options{Prefix: "refcast", Partitions: 4})
	repo := "acme/app"
	pi := bus.PartitionOf(repo, 4)
	if _, err := b.Publish(t.Context(), bustest.Push("push-1", repo, "refs/heads/main", bustest.ID(1))); err != nil {
		t.Fatal(err)
	}
	rc := srv.Client()
	keys, err := rc.Keys(t.Context(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("refcast:{p%d}:", pi)
	for _, k := range []string{"stream", "seq", "epoch", "repos", "state:" + repo, "push:push-1"} {
		if n, _ := rc.Exists(t.Context(), tag+k).Result(); n != 1 {
			t.Errorf("key %s missing; keys: %v", tag+k, keys)
		}
	}
	entries, err := rc.XRange(t.Context(), tag+"stream", "-", "+").Result()
	if err != nil || len(entries) != 1 || entries[0].ID != "1-0" {
		t.Fatalf("stream = %v, %v; want one entry 1-0", entries, err)
	}
	if ttl := rc.PTTL(t.Context(), tag+"push:push-1").Val(); ttl <= 0 || ttl > redis.DefaultPushTTL {
		t.Errorf("push key ttl = %v, want within DefaultPushTTL", ttl)
	}
}

func TestPushTTLExpires(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	b := open(t, srv.URL(), redis.Options{Partitions: 1, PushTTL: 100 * time.Millisecond})
	p := bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))
	if _, err := b.Publish(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	evs, err := b.Publish(t.Context(), p)
	if err != nil || evs[0].Seq != 2 {
		t.Errorf("republish after PushTTL: %v, %v; want a new event at seq 2", evs, err)
	}
}

func TestOptionsInvalid(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for name, o := range map[string]redis.Options{
		"prefix with brace": {Prefix: "a{b}"},
		"too many parts":    {Partitions: 5000},
		"negative history":  {History: -1},
		"negative max age":  {MaxAge: -time.Second},
	} {
		if _, err := redis.New(c, o); !errors.Is(err, bus.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// TestLostCounter: the seq counter vanishes but the stream (trimmed empty)
// remains; publishing continues after the stream's last id instead of
// failing on every push.
func TestLostCounter(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	prefix := uniquePrefix()
	b := open(t, srv.URL(), redis.Options{Prefix: prefix, Partitions: 1})
	ctx := t.Context()
	for i := range 3 {
		if _, err := b.Publish(ctx, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	admin := srv.Client()
	admin.XTrimMinID(ctx, prefix+":{p0}:stream", "100-0")
	admin.Del(ctx, prefix+":{p0}:seq")
	evs, err := b.Publish(ctx, bustest.Push("p3", "acme/app", "refs/heads/main", bustest.ID(9)))
	if err != nil || evs[0].Seq != 4 {
		t.Fatalf("publish after losing the counter = %v, %v; want seq 4", evs, err)
	}
}
