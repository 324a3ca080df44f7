package redis_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/internal/redistest"
)

// BenchmarkPublish: concurrent pushes of one update each through the
// publish script, reported as pushes/s.
func BenchmarkPublish(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	bb := open(b, srv.URL(), redis.Options{})
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			p := bustest.Push("p"+strconv.FormatInt(i, 10), fmt.Sprintf("acme/r%d", i%64), "refs/heads/main", bustest.ID(int(i)))
			if _, err := bb.Publish(context.Background(), p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "pushes/s")
}

// BenchmarkSeed: one seed of 100,000 refs (a third of them peeled tags)
// through the publish script, the whole state replaced at once; Redis is
// busy with it for the whole call (docs/architecture.md).
func BenchmarkSeed(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	bb := open(b, srv.URL(), redis.Options{Timeout: time.Minute})
	ups := make([]bus.RefUpdate, 100000)
	for i := range ups {
		ups[i] = bus.RefUpdate{Ref: fmt.Sprintf("refs/heads/branch-%06d", i), New: bustest.ID(i + 1)}
		if i%3 == 0 {
			ups[i].Ref, ups[i].Peeled = fmt.Sprintf("refs/tags/v%06d", i), bustest.ID(i+2)
		}
	}
	i := 0
	for b.Loop() {
		i++
		p := &bus.Push{ID: fmt.Sprint("seed", i), Repo: "acme/big", Time: time.Now(), Seed: true, Head: "refs/heads/branch-000001", Updates: ups}
		if _, err := bb.Publish(context.Background(), p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishToSubscriber: latency from calling Publish to the event
// arriving on a subscription, one push at a time.
func BenchmarkPublishToSubscriber(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	bb := open(b, srv.URL(), redis.Options{})
	ctx := context.Background()
	from, err := bb.Heads(ctx)
	if err != nil {
		b.Fatal(err)
	}
	sub, err := bb.Subscribe(ctx, from)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p := bustest.Push("p"+strconv.Itoa(i), fmt.Sprintf("acme/r%d", i%64), "refs/heads/main", bustest.ID(i+1))
		t0 := time.Now()
		if _, err := bb.Publish(ctx, p); err != nil {
			b.Fatal(err)
		}
		for m := range sub.C() {
			if len(m.Events) > 0 && m.Events[0].PushID == p.ID {
				break
			}
		}
		lat = append(lat, time.Since(t0))
	}
	reportLatency(b, lat)
}

func reportLatency(b *testing.B, lat []time.Duration) {
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkDelivery compares, on one redis-server, how fast a message
// reaches a waiting reader through PUBLISH/SUBSCRIBE and through
// XADD + XREAD BLOCK: the cost of choosing streams (no loss window) over
// pub/sub. One message in flight at a time; the writer starts timing
// before its command.
func BenchmarkDelivery(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	payload := `{"v":1,"repo":"acme/app","ref":"refs/heads/main","old":"` + bustest.ID(1) + `","new":"` + bustest.ID(2) + `","kind":"update","push":"p1","time":"2026-11-25T14:00:00Z"}`

	b.Run("pubsub", func(b *testing.B) {
		w, r := srv.Client(), srv.Client()
		ps := r.Subscribe(ctx, "bench")
		defer ps.Close()
		if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
			b.Fatal(err)
		}
		ch := ps.Channel()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			t0 := time.Now()
			if err := w.Publish(ctx, "bench", payload).Err(); err != nil {
				b.Fatal(err)
			}
			<-ch
			lat = append(lat, time.Since(t0))
		}
		reportLatency(b, lat)
	})

	b.Run("xread", func(b *testing.B) {
		w, r := srv.Client(), srv.Client()
		stream := uniquePrefix() // the function runs more than once on this server
		got := make(chan struct{})
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			last := "0"
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := r.XRead(ctx, &goredis.XReadArgs{Streams: []string{stream, last}, Block: 100 * time.Millisecond, Count: 10}).Result()
				if err != nil {
					continue
				}
				for _, m := range res[0].Messages {
					last = m.ID
					select {
					case got <- struct{}{}:
					case <-stop:
						return
					}
				}
			}
		}()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			t0 := time.Now()
			if err := w.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{"e", payload}, MaxLen: 1000, Approx: true}).Err(); err != nil {
				b.Fatal(err)
			}
			<-got
			lat = append(lat, time.Since(t0))
		}
		reportLatency(b, lat)
		close(stop)
		<-done
	})
}

var _ bus.Bus = (*redis.Bus)(nil)
