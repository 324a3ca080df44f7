package hook

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/refcast/refcast/bus"
)

// flakyPub fails its first n publishes, then records like recPub.
type flakyPub struct {
	recPub
	mu    sync.Mutex
	n     int
	tries int
}

func (p *flakyPub) Publish(ctx context.Context, push *bus.Push) error {
	p.mu.Lock()
	p.tries++
	fail := p.tries <= p.n
	p.mu.Unlock()
	if fail {
		return errors.New("node down")
	}
	return p.recPub.Publish(ctx, push)
}

func TestFlushWait(t *testing.T) {
	tests := []struct {
		name      string
		failures  int
		giveUp    time.Duration
		wantErr   bool
		published int
	}{
		{"at once", 0, 0, false, 2},
		{"after retries", 5, 0, false, 2},
		{"gives up", 1 << 30, time.Hour, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sp, err := OpenSpool(t.TempDir(), nil)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 2 {
					if _, err := sp.Write(testPush(i)); err != nil {
						t.Fatal(err)
					}
				}
				pub := &flakyPub{n: tt.failures}
				res, err := sp.FlushWait(context.Background(), pub, WaitOptions{GiveUp: tt.giveUp})
				if (err != nil) != tt.wantErr {
					t.Fatalf("err %v, want error %v", err, tt.wantErr)
				}
				if res.Published != tt.published || !slices.Equal(pub.got(), []string{"p-test-0000", "p-test-0001"}[:tt.published]) {
					t.Errorf("published %d %v, want %d in order", res.Published, pub.got(), tt.published)
				}
				if left, _ := sp.Pending(); len(left) != 2-tt.published || res.Left != len(left) {
					t.Errorf("left %d (result %d), want %d", len(left), res.Left, 2-tt.published)
				}
				if sp.FlusherRunning() {
					t.Error("flusher lock still held after FlushWait returned")
				}
			})
		})
	}
}

// TestFlushWaitOnce: while one flusher holds a spool, another returns
// ErrFlusherRunning at once, and the holder publishes everything, pushes
// spooled while it waited included.
func TestFlushWaitOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp, err := OpenSpool(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		sp.Write(testPush(0))
		pub := &flakyPub{n: 3}
		done := make(chan error)
		go func() {
			_, err := sp.FlushWait(context.Background(), pub, WaitOptions{})
			done <- err
		}()
		synctest.Wait() // the first try failed; it sleeps holding the lock
		if !sp.FlusherRunning() {
			t.Fatal("FlusherRunning false while a flusher waits")
		}
		if _, err := sp.FlushWait(context.Background(), pub, WaitOptions{}); !errors.Is(err, ErrFlusherRunning) {
			t.Fatalf("second FlushWait: %v, want ErrFlusherRunning", err)
		}
		sp.Write(testPush(1))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := pub.got(); !slices.Equal(got, []string{"p-test-0000", "p-test-0001"}) {
			t.Errorf("published %v", got)
		}
	})
}

func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{time.Second, 5 * time.Minute} {
		for range 100 {
			if j := jitter(d); j < d/2 || j > d {
				t.Fatalf("jitter(%v) = %v, want within [%v, %v]", d, j, d/2, d)
			}
		}
	}
}
