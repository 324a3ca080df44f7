//go:build unix

package server

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
)

// worstQuery is the query string of the costliest subscription the node
// accepts (issue 19 item 2), made distinct by i (identical filters share
// one match per event): every repo glob a deep `**/a/a/a/b/**` that walks
// the whole repo name and fails, the last one `**` so that every ref
// pattern is tried too, each ref pattern `refs/*a*a…*b<i>` with the most
// wildcards allowed. It matches none of the events, so all it adds is its
// matching cost on every event.
func worstQuery(i int) string {
	repo := "**/" + strings.Repeat("a/", bus.MaxSegmentsBetweenDoubleStars-1) + "b/**"
	ref := "refs/" + strings.Repeat("*a", bus.MaxWildcards-1) + "*b" + strconv.Itoa(i)
	v := url.Values{}
	for n := len("**"); len(v["repo"]) < bus.MaxReposPerFilter-1 && n+len(repo)+len(ref) <= bus.MaxFilterBytes; n += len(repo) + len(ref) {
		v.Add("repo", repo)
		v.Add("ref", ref)
	}
	v.Add("repo", "**")
	return v.Encode()
}

// BenchmarkCostlySubscriptions measures issue 19 item 2's figure: a
// well-behaved client's delivery latency at 100 events/s, first alone
// (unloaded), then with 1,000 streams holding the worst accepted
// subscription connected (and reading) to the same node, in one run.
// Target: loaded p99 within 2× unloaded. Run it with -benchtime 1x;
// REFCAST_BENCH_COSTLY_EVENTS sets events per phase (default 500, 5 s).
func BenchmarkCostlySubscriptions(b *testing.B) {
	const (
		costly = 1000
		every  = 10 * time.Millisecond // 100 events/s
	)
	events := 500
	if v := os.Getenv("REFCAST_BENCH_COSTLY_EVENTS"); v != "" {
		var err error
		if events, err = strconv.Atoi(v); err != nil || events < 1 {
			b.Fatalf("REFCAST_BENCH_COSTLY_EVENTS=%q: want a positive number of events", v)
		}
	}
	raiseNoFile(b, 2*costly+1000)
	for b.Loop() {
		n := startNode(b, newBus(b, memory.Options{}), 200*time.Millisecond, func(o *Options) {
			o.MaxConnections = 10000
			o.MaxPerAnonymous = -1 // every stream comes from 127.0.0.1
			o.PublishRate = -1     // 100 publishes/s from one address
		})
		// The costly streams are accepted: the filter is within every limit.
		if s := n.subscribe(b, worstQuery(costly), nil); s.resp.StatusCode != 200 {
			b.Fatalf("worst accepted subscription refused: %d", s.resp.StatusCode)
		} else {
			s.close()
		}
		phase := func(name string, first int) (lat []time.Duration, cpuPerEvent time.Duration) {
			s := n.subscribe(b, query("repo", "acme/app"), nil)
			s.opening()
			c := collectLatency(s)
			pub := clientFrom("127.0.0.1")
			defer pub.CloseIdleConnections()
			tk := time.NewTicker(every)
			defer tk.Stop()
			cpu0 := cpuTime()
			for i := range events {
				<-tk.C
				p := newPush("acme/app", upd(costlyRef, oid(first+i), oid(first+i+1)))
				if err := postPush(pub, n.url, p); err != nil {
					b.Fatalf("%s: publish %d: %v", name, i, err)
				}
			}
			eventually(b, 2*time.Minute, fmt.Sprintf("%s: %d events delivered", name, events), func() bool { return c.count() >= events })
			cpu := cpuTime() - cpu0
			s.close()
			c.mu.Lock()
			defer c.mu.Unlock()
			return slices.Clone(c.lat), cpu / time.Duration(events)
		}
		unloaded, unloadedCPU := phase("unloaded", 0)

		var conns []net.Conn
		var mu sync.Mutex
		var refused atomic.Int64
		parallel(32, costly, func(i int) {
			req := []byte("GET /v1/events?" + worstQuery(i) + " HTTP/1.1\r\nHost: x\r\n\r\n")
			conn, err := net.DialTimeout("tcp", n.addr, 10*time.Second)
			if err == nil {
				_, err = conn.Write(req)
			}
			if err != nil {
				refused.Add(1)
				if conn != nil {
					conn.Close()
				}
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, conn) }() // ends when conn is closed below
		})
		eventually(b, 2*time.Minute, fmt.Sprintf("%d costly streams registered", costly), func() bool { return n.srv.engine.Count() >= costly-int(refused.Load()) })
		loaded, loadedCPU := phase("loaded", events)
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		if refused.Load() > 0 {
			b.Fatalf("%d of %d costly streams could not connect", refused.Load(), costly)
		}

		u50, u99 := percentile(unloaded, 0.50), percentile(unloaded, 0.99)
		l50, l99 := percentile(loaded, 0.50), percentile(loaded, 0.99)
		b.Logf("well-behaved client at 100 events/s, %d events per phase: unloaded p50 %v p99 %v, process CPU %v per event; with %d worst-case streams p50 %v p99 %v, CPU %v per event (p99 ratio %.2f)",
			events, u50, u99, unloadedCPU, costly, l50, l99, loadedCPU, float64(l99)/float64(u99))
		b.ReportMetric(float64(loadedCPU-unloadedCPU)/float64(time.Microsecond)/costly, "cpu-µs/event/costly-stream")
		b.ReportMetric(ms(u99), "unloaded-p99-ms")
		b.ReportMetric(ms(l99), "loaded-p99-ms")
		b.ReportMetric(float64(l99)/float64(u99), "p99-ratio")
		b.ReportMetric(ms(u50), "unloaded-p50-ms")
		b.ReportMetric(ms(l50), "loaded-p50-ms")
	}
}

// costlyRef is the ref every event updates: a plausible name whose run of
// a's makes each `*a*a…*b` pattern try the most before it fails (the
// "typical" case of bus's BenchmarkFilterWorst).
var costlyRef = "refs/heads/feature/" + strings.Repeat("a", 40)

// cpuTime is this process's user and system CPU time so far: the node,
// the publisher and every client, all in this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return d.Seconds() * 1000 }

// percentile is the q-quantile of lat (nearest rank); 0 for none.
func percentile(lat []time.Duration, q float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
