package server

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus/memory"
)

// fakeClock is a settable clock for a rateLimiter.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestRateLimiter(t *testing.T) {
	t.Parallel()
	type step struct {
		at    time.Duration // clock, from the start
		key   string
		ok    bool
		retry time.Duration // when refused
		size  int           // keys tracked after the step, when > 0
	}
	const never = time.Duration(math.MaxInt64)
	cases := []struct {
		name    string
		rate    float64
		burst   int
		maxKeys int
		steps   []step
	}{
		{"burst then refuse", 10, 3, 10, []step{
			{0, "a", true, 0, 1}, {0, "a", true, 0, 0}, {0, "a", true, 0, 0},
			{0, "a", false, 100 * time.Millisecond, 0},
		}},
		{"refill at rate", 10, 3, 10, []step{
			{0, "a", true, 0, 0}, {0, "a", true, 0, 0}, {0, "a", true, 0, 0},
			{50 * time.Millisecond, "a", false, 50 * time.Millisecond, 0},
			{100 * time.Millisecond, "a", true, 0, 0},
			{100 * time.Millisecond, "a", false, 100 * time.Millisecond, 0},
			{250 * time.Millisecond, "a", true, 0, 0},
			{250 * time.Millisecond, "a", false, 50 * time.Millisecond, 0},
		}},
		{"refill stops at burst", 10, 2, 10, []step{
			{0, "a", true, 0, 0}, {0, "a", true, 0, 0},
			{time.Hour, "a", true, 0, 0}, {time.Hour, "a", true, 0, 0},
			{time.Hour, "a", false, 100 * time.Millisecond, 0},
		}},
		{"keys are independent", 1, 1, 10, []step{
			{0, "a", true, 0, 1}, {0, "a", false, time.Second, 0},
			{0, "b", true, 0, 2}, {0, "b", false, time.Second, 0},
		}},
		{"clock going backwards adds nothing", 1, 1, 10, []step{
			{time.Second, "a", true, 0, 0},
			{0, "a", false, time.Second, 0},
			{2 * time.Second, "a", true, 0, 0},
		}},
		{"rate zero is a burst for life", 0, 2, 10, []step{
			{0, "a", true, 0, 0}, {0, "a", true, 0, 0},
			{time.Hour, "a", false, never, 0},
		}},
		{"burst below one is one", 1, 0, 10, []step{
			{0, "a", true, 0, 0}, {0, "a", false, time.Second, 0},
		}},
		{"a full bucket is forgotten", 1, 1, 10, []step{
			{0, "a", true, 0, 1},
			{0, "b", true, 0, 2},
			{time.Second, "c", true, 0, 1}, // a and b refilled: swept
			{time.Second, "c", false, time.Second, 1},
		}},
		{"at maxKeys the least recently used is dropped", 1, 1, 2, []step{
			{0, "a", true, 0, 1},
			{0, "b", true, 0, 2},
			{0, "a", false, time.Second, 2}, // a is now the most recent
			{0, "c", true, 0, 2},            // drops b
			{0, "a", false, time.Second, 2}, // a kept its (empty) bucket
			{0, "b", true, 0, 2},            // b starts again with a full burst
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			clk := &fakeClock{t: start}
			l := newRateLimiter(tc.rate, tc.burst, tc.maxKeys, clk.now)
			for i, st := range tc.steps {
				clk.t = start.Add(st.at)
				ok, retry := l.allow(st.key)
				if ok != st.ok {
					t.Fatalf("step %d (%v, %s): allowed %v, want %v", i, st.at, st.key, ok, st.ok)
				}
				if d := retry - st.retry; !ok && (d < -time.Microsecond || d > time.Microsecond) {
					t.Fatalf("step %d (%v, %s): retry after %v, want %v", i, st.at, st.key, retry, st.retry)
				}
				if st.size > 0 && l.size() != st.size {
					t.Fatalf("step %d (%v, %s): %d keys tracked, want %d", i, st.at, st.key, l.size(), st.size)
				}
			}
		})
	}
}

func TestRateLimiterOff(t *testing.T) {
	t.Parallel()
	l := newRateLimiter(-1, 1, 1, nil)
	if l != nil {
		t.Fatal("a negative rate must turn the limit off")
	}
	for range 1000 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatal("a nil limiter refused")
		}
	}
}

// TestRateLimiterKeyBound: an attacker spraying addresses cannot grow the
// limiter past maxKeys, and once it stops, its buckets go away as they
// refill.
func TestRateLimiterKeyBound(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &fakeClock{t: start}
	const maxKeys = 100
	l := newRateLimiter(10, 20, maxKeys, clk.now)
	for i := range 100_000 {
		clk.t = start.Add(time.Duration(i) * time.Microsecond)
		l.allow(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		if n := l.size(); n > maxKeys {
			t.Fatalf("after %d keys: %d tracked, bound %d", i+1, n, maxKeys)
		}
	}
	if l.dropped == 0 {
		t.Fatal("no bucket was dropped at the bound")
	}
	// Two seconds later every sprayed bucket is full: a legitimate client's
	// requests sweep them away.
	clk.t = clk.t.Add(2 * time.Second)
	for range maxKeys / 2 {
		l.allow("192.0.2.1")
	}
	if n := l.size(); n != 1 {
		t.Fatalf("%d keys tracked after the spray refilled, want 1", n)
	}
}

// TestRateLimiterMemory measures a bucket's cost and so the bound of
// rateLimitKeys.
func TestRateLimiterMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a full limiter")
	}
	clk := &fakeClock{t: time.Now()}
	l := newRateLimiter(1, 1, rateLimitKeys, clk.now)
	keys := make([]string, rateLimitKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("2001:db8:%x:%x::/64", i>>8, i&255)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, k := range keys {
		l.allow(k)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / rateLimitKeys
	t.Logf("%d keys: %.0f bytes per key beyond the key string, %.1f MiB in all", l.size(), per, per*rateLimitKeys/(1<<20))
	if l.size() != rateLimitKeys || per > 300 {
		t.Fatalf("%d keys at %.0f bytes each", l.size(), per)
	}
	runtime.KeepAlive(keys)
}

func TestRateKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.1:1234", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{"[fe80::1%eth0]:80", "fe80::/64"},
		{"not-an-address", "not-an-address"},
	} {
		t.Run(tc.remote, func(t *testing.T) {
			if got := (&Server{}).rateKey(&http.Request{RemoteAddr: tc.remote}); got != tc.want {
				t.Fatalf("rateKey(%q) = %q, want %q", tc.remote, got, tc.want)
			}
		})
	}
}

func TestClientKeyTrustedProxies(t *testing.T) {
	t.Parallel()
	s := &Server{opts: Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}}}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"untrusted peer ignores the header", "192.0.2.9:1", []string{"198.51.100.1"}, "192.0.2.9"},
		{"trusted peer, one hop", "127.0.0.1:1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"right-most untrusted wins over a spoofed left", "127.0.0.1:1", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"skips trusted hops", "127.0.0.1:1", []string{"198.51.100.1, 10.1.2.3"}, "198.51.100.1"},
		{"several header lines", "127.0.0.1:1", []string{"6.6.6.6", "198.51.100.7"}, "198.51.100.7"},
		{"no header", "127.0.0.1:1", nil, "127.0.0.1"},
		{"malformed chain", "127.0.0.1:1", []string{"nonsense"}, "127.0.0.1"},
		{"all trusted", "127.0.0.1:1", []string{"10.0.0.1"}, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientKey(r); got != tc.want {
				t.Fatalf("clientKey = %q, want %q", got, tc.want)
			}
		})
	}
}

// clientFrom is an HTTP client whose connections come from ip (any
// 127.0.0.0/8 address works on loopback).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// TestRateLimitHTTP: the limits over real HTTP: 429 with Retry-After and a
// JSON body, per client address, a long-poll charged once, counted in
// refcast_rejected_total.
func TestRateLimitHTTP(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) {
		o.PublishRate, o.PublishBurst = 0.01, 3
		o.SnapshotRate, o.SnapshotBurst = 0.01, 3
	})
	for i := range 3 {
		n.publish(t, newPush("acme/app", upd("refs/heads/main", oidOrZero(i), oid(i+1))))
	}
	st, h, body := n.publishRaw(t, testToken, "application/json", []byte(`{}`))
	if st != http.StatusTooManyRequests || h.Get("Retry-After") != "100" {
		t.Fatalf("4th publish: %d Retry-After %q %s", st, h.Get("Retry-After"), body)
	}
	if msg := apiErrorBody(t, 429, body); !strings.Contains(msg, "publish") {
		t.Fatalf("429 message %q", msg)
	}
	// The limit is checked before the credential.
	if st, _, _ := n.publishRaw(t, "wrong", "application/json", []byte(`{}`)); st != http.StatusTooManyRequests {
		t.Fatalf("publish with a wrong token over the limit: %d", st)
	}

	q := query("repo", "acme/app")
	_, hdr, _ := n.get(t, "/v1/refs?"+q, nil) // 1
	etag := hdr.Get("ETag")
	// A long-poll held until its wait= ends is one request: 2.
	start := time.Now()
	if st, _, body := n.get(t, "/v1/refs?"+q+"&wait=300ms", map[string]string{"If-None-Match": etag}); st != http.StatusNotModified {
		t.Fatalf("long-poll: %d %s", st, body)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("long-poll answered after %v, not held", el)
	}
	if st, _, _ := n.get(t, "/v1/refs?"+q, nil); st != http.StatusOK { // 3
		t.Fatalf("3rd snapshot: %d", st)
	}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, n.url+"/v1/refs?"+q, nil)
		st, h, body := do(t, req)
		if st != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
			t.Fatalf("%s over the snapshot limit: %d Retry-After %q", method, st, h.Get("Retry-After"))
		}
		if method == http.MethodGet {
			apiErrorBody(t, 429, body)
		}
	}
	// Another client is not affected.
	other := clientFrom("127.0.0.2")
	resp, err := other.Get(n.url + "/v1/refs?" + q)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("snapshot from another address: %d", resp.StatusCode)
	}
	// Streams are not rate limited.
	n.subscribe(t, q, nil).opening()

	if got := n.metric(t, "refcast_rejected_total", "limit", "publish_rate"); got != 2 {
		t.Errorf("refcast_rejected_total{limit=publish_rate} = %v, want 2", got)
	}
	if got := n.metric(t, "refcast_rejected_total", "limit", "snapshot_rate"); got != 2 {
		t.Errorf("refcast_rejected_total{limit=snapshot_rate} = %v, want 2", got)
	}
}

// TestRateLimitOff: a negative rate lets a client past the default burst.
func TestRateLimitOff(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) {
		o.PublishRate, o.SnapshotRate = -1, -1
	})
	for range DefaultSnapshotBurst + 50 {
		if st, _, body := n.get(t, "/v1/refs?"+query("repo", "acme/app"), nil); st != http.StatusOK {
			t.Fatalf("snapshot with the limit off: %d %s", st, body)
		}
	}
}

func oidOrZero(i int) string {
	if i == 0 {
		return z
	}
	return oid(i)
}
