package redis_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/internal/redistest"
)

// TestPartitionCountRecorded: the first Bus to use a Redis records its
// partition count; a Bus with another count refuses every operation with
// ErrMismatch and a message naming both numbers, whether it was opened
// (checked at once) or dialled (checked on first use), while one with the
// same count works.
func TestPartitionCountRecorded(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	prefix := uniquePrefix()
	first := open(t, srv.URL(), redis.Options{Prefix: prefix, Partitions: 16})
	if _, err := first.Publish(t.Context(), bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))); err != nil {
		t.Fatal(err)
	}

	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	meta, err := rdb.HGetAll(t.Context(), prefix+":meta").Result()
	if err != nil {
		t.Fatal(err)
	}
	if meta["partitions"] != "16" || meta["layout"] != "1" {
		t.Errorf("%s:meta = %v, want partitions 16 and layout 1", prefix, meta)
	}

	wantMismatch := func(t *testing.T, what string, err error) {
		t.Helper()
		if !errors.Is(err, redis.ErrMismatch) || errors.Is(err, bus.ErrUnavailable) {
			t.Fatalf("%s: err = %v, want ErrMismatch and not ErrUnavailable", what, err)
		}
		for _, want := range []string{"16 partitions", "--partitions 8", "use --partitions 16"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", what, err, want)
			}
		}
	}

	t.Run("Open", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		b, err := redis.Open(ctx, srv.URL(), redis.Options{Prefix: prefix, Partitions: 8})
		if err == nil {
			b.Close()
		}
		wantMismatch(t, "Open", err)
	})

	t.Run("Dial", func(t *testing.T) {
		b, err := redis.Dial(srv.URL(), redis.Options{Prefix: prefix, Partitions: 8, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		ctx := t.Context()
		wantMismatch(t, "Ping", b.Ping(ctx))
		_, err = b.Heads(ctx)
		wantMismatch(t, "Heads", err)
		_, err = b.Publish(ctx, bustest.Push("p2", "acme/app", "refs/heads/main", bustest.ID(2)))
		wantMismatch(t, "Publish", err)
		_, err = b.Refs(ctx, "acme/app")
		wantMismatch(t, "Refs", err)
		_, err = b.Repos(ctx)
		wantMismatch(t, "Repos", err)
		_, err = b.History(ctx, 0, 1, 0, 10)
		wantMismatch(t, "History", err)
	})

	t.Run("SameCount", func(t *testing.T) {
		b := open(t, srv.URL(), redis.Options{Prefix: prefix, Partitions: 16})
		st, err := b.Refs(t.Context(), "acme/app")
		if err != nil {
			t.Fatal(err)
		}
		if st.Refs["refs/heads/main"] != bustest.ID(1) {
			t.Errorf("refs = %v, want what the first bus published", st.Refs)
		}
	})

	t.Run("OtherPrefix", func(t *testing.T) {
		open(t, srv.URL(), redis.Options{Prefix: uniquePrefix(), Partitions: 8})
	})
}

// TestLayoutVersionRecorded: a Redis recorded by another key layout is
// refused too, naming both layouts.
func TestLayoutVersionRecorded(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	prefix := uniquePrefix()
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	if err := rdb.HSet(t.Context(), prefix+":meta", "partitions", "16", "layout", "2").Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	b, err := redis.Open(ctx, srv.URL(), redis.Options{Prefix: prefix})
	if err == nil {
		b.Close()
	}
	if !errors.Is(err, redis.ErrMismatch) || !strings.Contains(err.Error(), `layout "2"`) {
		t.Fatalf("Open = %v, want ErrMismatch naming layout 2", err)
	}
}
