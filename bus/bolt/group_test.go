package bolt

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refcast/refcast/bus/bustest"
)

// TestGroupCommitConcurrent: concurrent publishers sharing commits still
// get dense, distinct positions, every event lands in the history once,
// and a push id repeated within one batch is published once.
func TestGroupCommitConcurrent(t *testing.T) {
	t.Parallel()
	b := open(t, t.TempDir(), Options{Partitions: 2})
	ctx := context.Background()
	const writers, per = 12, 30
	var wg sync.WaitGroup
	seen := sync.Map{}
	var dupSame atomic.Int64
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				id := fmt.Sprintf("w%d-%d", w, i)
				if i%10 == 0 {
					id = fmt.Sprintf("shared-%d", i) // every writer publishes it
				}
				evs, err := b.Publish(ctx, bustest.Push(id, fmt.Sprintf("acme/r%d", (w+i)%5), "refs/heads/main", bustest.ID(w*1000+i+1)))
				if err != nil {
					t.Error(err)
					return
				}
				key := fmt.Sprintf("%d/%d", evs[0].Partition, evs[0].Seq)
				if prev, loaded := seen.LoadOrStore(key, id); loaded {
					if prev != id {
						t.Errorf("position %s given to %s and %s", key, prev, id)
					}
					dupSame.Add(1)
				}
			}
		})
	}
	wg.Wait()
	unique := writers*per - (writers-1)*(per/10)
	heads, err := b.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for pi, h := range heads {
		evs, err := b.History(ctx, pi, h.Epoch, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range evs {
			if e.Seq != uint64(i+1) {
				t.Fatalf("partition %d: event %d has seq %d", pi, i, e.Seq)
			}
		}
		total += h.Last
	}
	if total != uint64(unique) {
		t.Fatalf("%d events in the history, want %d (one per distinct push id)", total, unique)
	}
	if got := dupSame.Load(); got != int64((writers-1)*(per/10)) {
		t.Fatalf("%d republished ids got their original position, want %d", got, (writers-1)*(per/10))
	}
}

// BenchmarkPublishConcurrent: 8 publishers at once, as the load tool's
// rate scenario does; with group commit they share fsyncs.
func BenchmarkPublishConcurrent(b *testing.B) {
	bb := open(b, b.TempDir(), Options{History: 1000})
	ctx := context.Background()
	var n atomic.Int64
	start := time.Now()
	b.SetParallelism(4) // 4 × GOMAXPROCS goroutines: 8 on this machine
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := bb.Publish(ctx, bustest.Push(fmt.Sprintf("c%d", i), fmt.Sprintf("acme/r%d", i%64), "refs/heads/main", bustest.ID(int(i)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "pushes/s")
}
