package relay

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

// BenchmarkRelayDeliveries measures github-format deliveries per second to
// a local receiver that answers 204, with updates spread over 1, 8 and 64
// repos (one repo's deliveries are sequential, so repos are the
// concurrency), and the heap held while they are pending.
func BenchmarkRelayDeliveries(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer srv.Close()
	for _, repos := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("repos=%d", repos), func(b *testing.B) {
			f, _ := ParseFormat("github")
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = repos
			r, err := New(Options{
				HTTPClient: &http.Client{Transport: tr},
				Targets:    []*Target{{Name: "bench", URL: srv.URL, Format: f, Secret: []byte(secret), RepoURL: "https://g/{repo}"}},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(time.Second)
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			b.ResetTimer()
			last := ""
			for i := range b.N {
				last = fmt.Sprintf("c%d", i)
				e := bus.Event{V: 1, Repo: fmt.Sprintf("org/r%d", i%repos), Ref: "refs/heads/main", Old: sha(i), New: sha(i + 1), Kind: bus.KindUpdate, PushID: fmt.Sprintf("p%d", i), Time: time.Now()}
				if err := r.Handle(context.Background(), Update{Cursor: last, Event: e}); err != nil {
					b.Fatal(err)
				}
			}
			var peak runtime.MemStats
			runtime.ReadMemStats(&peak)
			for r.Safe() != last {
				<-r.Changed()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
			b.ReportMetric(float64(peak.HeapAlloc-min(peak.HeapAlloc, before.HeapAlloc))/float64(b.N), "heap-B/pending")
		})
	}
}
