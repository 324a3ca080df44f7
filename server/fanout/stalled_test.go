package fanout

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bolt"
)

// TestStalledReadersMemoryBound: streams that never read, and a burst of
// events far beyond what their queues and MaxQueuedBytes hold. The node
// must evict them for memory (the largest holders first), keep its heap
// above idle within the bound plus a margin, and deliver every event to
// the streams that read. It asserts a memory bound and counts, not time.
//
// Before the bound, 2,000 such streams and 6,000 events pinned 248 MiB
// (BenchmarkStalledReaders' scenario; the heap profile put 80 MB in write
// buffers, 41 MB in pending tails, 38 MB in the kernel-call iovecs and 49
// MB in queues grown past MaxQueue by a push, the frames themselves 16 MB).
func TestStalledReadersMemoryBound(t *testing.T) {
	const bound = 4 << 20
	f := runStalled(t, 200, 4, 2000, bound)
	t.Logf("peak heap above idle %.1f MiB, peak counted %.1f MiB, evictions %v", mib(f.heapPeak), mib(uint64(f.queuedPeak)), f.evictions)
	// A reading stream slower than the burst on a loaded machine can fill
	// its queue too and be evicted; it resumes from its cursor, so nothing
	// is lost. Whether that happens depends on speed, so it is logged.
	if f.goodShort > 0 {
		t.Logf("%d of the streams that read were evicted before they had every event (they resume from their cursor)", f.goodShort)
	}
	if f.evictions[ReasonMemory] == 0 {
		t.Errorf("no eviction for memory: %v", f.evictions)
	}
	// The margin: the memory bus keeps every event published (2,000 of
	// some 2.2 KB decoded: 4.4 MB), the good readers' buffers, and
	// garbage not yet collected (the collector lets the heap grow to
	// twice what is live before it runs).
	if limit := uint64(3*bound + 8<<20); f.heapPeak > limit {
		t.Errorf("heap grew %.1f MiB above idle, want at most %.1f MiB", mib(f.heapPeak), mib(limit))
	}
}

// BenchmarkStalledReaders runs the scenario of refcast issue 19 at full
// size with the default MaxQueuedBytes: 2,000 streams that never read, 20
// that do, a burst of 6,000 events of 2.3 KB. It reports the peak heap
// above idle (garbage included) and the evictions, the figures
// docs/security.md quotes. Run it with -benchtime 1x.
//
// It runs the burst twice, the second time without the stalled streams:
// the readers' latency then is what the burst alone costs on this machine
// (20 readers taking 14 MB each, in this process), the floor the first
// run's figures compare with.
func BenchmarkStalledReaders(b *testing.B) {
	for _, stalled := range []int{2000, 0} {
		b.Run(fmt.Sprintf("stalled=%d", stalled), func(b *testing.B) { benchStalled(b, stalled) })
	}
}

func benchStalled(b *testing.B, stalled int) {
	for b.Loop() {
		f := runStalled(b, stalled, 20, 6000, 0)
		b.ReportMetric(mib(f.heapPeak), "heap-peak-MiB")
		b.ReportMetric(mib(uint64(f.queuedPeak)), "counted-peak-MiB")
		if f.tcpPeak >= 0 {
			b.ReportMetric(mib(uint64(f.tcpPeak)), "kernel-tcp-peak-MiB")
		}
		b.ReportMetric(f.evictions[ReasonMemory], "evicted-memory")
		b.ReportMetric(f.evictions[ReasonQueueFull], "evicted-queue-full")
		b.ReportMetric(float64(f.goodShort), "good-closed")
		b.ReportMetric(f.p50.Seconds()*1000, "good-p50-ms")
		b.ReportMetric(f.p99.Seconds()*1000, "good-p99-ms")
	}
}

type stalledFigures struct {
	heapPeak   uint64 // HeapInuse above idle, sampled without forcing a collection
	queuedPeak int64  // Engine.QueuedBytes, sampled
	// tcpPeak is the kernel's TCP memory above idle, sampled (the whole
	// machine's, from /proc/net/sockstat; -1 where there is none).
	tcpPeak   int64
	evictions map[string]float64
	goodShort int           // good streams closed before they had every event
	p50, p99  time.Duration // the good streams' delivery latency
}

// runStalled opens stalled streams that never read and good ones that do,
// publishes events in pushes of 100 as fast as the bus takes them, waits
// until every good stream has every event, then removes the remaining
// streams and checks the engine's count of held bytes returns to 0.
func runStalled(tb testing.TB, stalled, good, events int, bound int64) stalledFigures {
	tb.Helper()
	const perPush = 100
	evictions := map[string]*counter{ReasonMemory: {}, ReasonQueueFull: {}, ReasonSlowClient: {}, ReasonWriteError: {}}
	// The embedded bus, as a node runs it: its history is on disk, out of
	// the heap, where the memory bus's would add the whole burst (6,000
	// events, 14 MB) to the heap figure.
	b, err := bolt.Open(tb.TempDir(), bolt.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	n := runEngineOn(tb, b, func(o *Options) {
		o.MaxQueuedBytes = bound
		o.WriteTimeout = time.Hour // evictions here are for memory and queues, not time
		o.Metrics.Evictions = func(r string) Counter { return evictions[r] }
	})
	var streams []Stream
	for i := range stalled {
		// Half fold by ref (mode=latest), so they hold frames of their
		// own, re-encoded for them, rather than shared ones.
		streams = append(streams, n.stalledStream(tb, Spec{Latest: i%2 == 0}, "acme/app"))
	}
	var got []*atomic.Int64
	var gone []*atomic.Bool // the node closed the stream
	var lat latencies
	var readers sync.WaitGroup
	for range good {
		st, cli := n.readerStream(tb, Spec{}, "acme/app")
		streams = append(streams, st)
		c := new(atomic.Int64)
		got = append(got, c)
		ended := new(atomic.Bool)
		gone = append(gone, ended)
		readers.Go(func() { readEvents(cli, c, &lat); ended.Store(true) })
	}
	idle := heapInuse()
	var queuedPeak atomic.Int64
	idleTCP := kernelTCPBytes()
	var tcpPeak atomic.Int64
	h := sampleHeap(func() {
		if q := n.QueuedBytes(); q > queuedPeak.Load() {
			queuedPeak.Store(q)
		}
		if k := kernelTCPBytes(); k > tcpPeak.Load() {
			tcpPeak.Store(k)
		}
	})
	// The same 100 refs, over and over: every push updates each of them.
	for i := 0; i < events; i += perPush {
		n.publish(tb, bigPush("acme/app", 0, perPush, func(r int) string { return oid(i + r) }, func(r int) string { return oid(i + r + perPush) }))
	}
	eventually(tb, 20*patience, "every good stream to get every event or be closed", func() bool {
		for i, c := range got {
			if c.Load() < int64(events) && !gone[i].Load() {
				return false
			}
		}
		return true
	})
	peak := h.stop()
	f := stalledFigures{heapPeak: peak - min(peak, idle), queuedPeak: queuedPeak.Load(), tcpPeak: -1, evictions: map[string]float64{},
		p50: lat.quantile(0.50), p99: lat.quantile(0.99)}
	if idleTCP >= 0 {
		f.tcpPeak = max(tcpPeak.Load()-idleTCP, 0)
	}
	for _, c := range got {
		if c.Load() != int64(events) {
			f.goodShort++
		}
	}
	for _, st := range streams {
		st.Remove(ReasonClosed)
	}
	eventually(tb, patience, "the held bytes to return to 0", func() bool { return n.QueuedBytes() == 0 })
	for r, c := range evictions {
		f.evictions[r] = c.value()
	}
	return f
}

// stalledStream registers a live hijacked stream on repo whose client
// never reads: its receive buffer is 4 KiB, so the node's side fills and
// the engine must hold, or not hold, what the client does not take.
func (n *testEngine) stalledStream(tb testing.TB, sp Spec, repo string) Stream {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	cli, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	srv, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Close() })
	return n.attach(tb, sp, srv, repo)
}

// readerStream registers a live hijacked stream on repo and returns its
// handle and the client's end.
func (n *testEngine) readerStream(tb testing.TB, sp Spec, repo string) (Stream, net.Conn) {
	tb.Helper()
	srv, cli := loopback(tb)
	// Socket buffers of 4 MiB on both ends (as autotuning reaches on a
	// busy link), so a reader that a loaded machine schedules late is
	// still one that keeps up: its socket does not fill.
	for _, c := range []net.Conn{srv, cli} {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(4 << 20)
			_ = tc.SetReadBuffer(4 << 20)
		}
	}
	return n.attach(tb, sp, srv, repo), cli
}

// attach registers a live hijacked stream on repo over srv.
func (n *testEngine) attach(tb testing.TB, sp Spec, srv net.Conn, repo string) Stream {
	tb.Helper()
	st := n.register(tb, sp, repo)
	if !st.Attach(srv) {
		tb.Fatal("stream removed before Attach")
	}
	st.GoLive(nil)
	return st
}

// countEvents counts the event frames c receives until it is closed.

// readEvents counts the event frames read from c and, when lat is not nil,
// records each one's delivery latency: read time minus the event's push
// time (the "time" field, set by the publisher when it made the push).
func readEvents(c net.Conn, got *atomic.Int64, lat *latencies) {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.Equal(line, []byte("event: ref")) {
			got.Add(1)
			continue
		}
		if lat == nil || !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		if _, after, ok := bytes.Cut(line, []byte(`"time":"`)); ok {
			if ts, _, ok := bytes.Cut(after, []byte(`"`)); ok {
				if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil {
					lat.add(time.Since(t))
				}
			}
		}
	}
}

// latencies collects delivery latencies from several readers.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// quantile is the q-quantile (nearest rank), 0 for none.
func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// heapSampler records the peak HeapInuse (no forced collection: garbage
// counts too) until stopped.
type heapSampler struct {
	peak atomic.Uint64
	done context.CancelFunc
	wg   sync.WaitGroup
}

// sampleHeap samples every 5 ms, calling also each time.
func sampleHeap(also func()) *heapSampler {
	ctx, cancel := context.WithCancel(context.Background())
	h := &heapSampler{done: cancel}
	h.wg.Go(func() {
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > h.peak.Load() {
				h.peak.Store(m.HeapInuse)
			}
			also()
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	})
	return h
}

func (h *heapSampler) stop() uint64 { h.done(); h.wg.Wait(); return h.peak.Load() }

// heapInuse is HeapInuse after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// TestSlowReaderKeptPastMaxQueue: the rule a burst meets. A stream whose
// socket is full and took no byte in stuckAfter writes in a row is evicted
// once its queue reaches MaxQueue; one whose writes still take bytes (a
// reader slower than the burst), or that missed only one, keeps queueing
// up to the hard bound, and the node's total (MaxQueuedBytes) bounds what
// that costs.
func TestSlowReaderKeptPastMaxQueue(t *testing.T) {
	const maxQueue = 8
	n := runEngine(t, func(o *Options) { o.MaxQueue = maxQueue })
	for _, tc := range []struct {
		name       string
		idleWrites int
		evictAt    int // 0: not within 4 × MaxQueue
	}{
		{"stopped reading", stuckAfter, maxQueue},
		{"reading slowly", 0, 0},
		{"not scheduled for one retry", stuckAfter - 1, 0},
	} {
		s := registerApp(t, n, Spec{})
		s.mu.Lock()
		s.stalledAt, s.idleWrites = time.Now(), tc.idleWrites
		s.mu.Unlock()
		evictedAt := 0
		for i := range 4 * maxQueue {
			ev := &bus.Event{Repo: "acme/app", Ref: "refs/heads/main", Kind: bus.KindUpdate}
			if reason, _ := s.add(newFrame([]byte("data: x\n\n"), ev), maxQueue); reason != "" {
				if reason != ReasonQueueFull {
					t.Errorf("%s: evicted for %q, want %q", tc.name, reason, ReasonQueueFull)
				}
				evictedAt = i
				break
			}
		}
		if evictedAt != tc.evictAt {
			t.Errorf("%s: evicted at frame %d, want %d (0: never)", tc.name, evictedAt, tc.evictAt)
		}
		n.remove(s, ReasonClosed)
	}
}

// TestEvictionResetsConnection: a stream the engine evicts is closed with
// a reset (SO_LINGER 0), its unsent bytes dropped rather than left to the
// kernel to deliver to a client that does not read; a stream that ends
// normally is closed gracefully, every byte delivered, then EOF.
func TestEvictionResetsConnection(t *testing.T) {
	t.Parallel()
	n := runEngine(t, nil)
	for _, tc := range []struct {
		reason string
		reset  bool
	}{
		{ReasonQueueFull, true},
		{ReasonClosed, false},
	} {
		st, cli := n.readerStream(t, Spec{}, "acme/app")
		// Unread bytes on the client's side of the connection.
		n.publish(t, bigPush("acme/app", 0, 50, func(int) string { return z }, func(i int) string { return oid(i + 1) }))
		rd := bufio.NewReader(cli)
		if _, err := rd.ReadString('\n'); err != nil {
			t.Fatalf("%s: first line: %v", tc.reason, err)
		}
		st.Remove(tc.reason)
		_ = cli.SetReadDeadline(time.Now().Add(patience))
		_, err := io.Copy(io.Discard, rd)
		switch {
		case tc.reset && !errors.Is(err, syscall.ECONNRESET):
			t.Errorf("%s: the client's read ended with %v, want a reset", tc.reason, err)
		case !tc.reset && err != nil:
			t.Errorf("%s: the client's read ended with %v, want EOF", tc.reason, err)
		}
	}
}

// kernelTCPBytes is the memory the kernel's TCP sockets hold, the whole
// machine's (the "mem" pages of /proc/net/sockstat), or -1 where there is
// no such file. Socket buffers are memory a stalled stream pins too, out
// of the heap.
func kernelTCPBytes() int64 {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "mem" {
				if pages, err := strconv.ParseInt(f[i+1], 10, 64); err == nil {
					return pages * int64(os.Getpagesize())
				}
			}
		}
	}
	return -1
}
