package server

import (
	"container/list"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// rateLimitKeys bounds the clients a rateLimiter tracks at once. A bucket
// costs about 150 bytes plus its key (TestRateLimiterMemory), so a limiter
// holds at most about 12 MiB however many addresses an attacker sprays from.
const rateLimitKeys = 1 << 16

// rateLimiter is a token bucket per client key: each key may make burst
// requests at once and rate per second after that. Safe for concurrent use.
//
// Memory is bounded: at most maxKeys buckets. A bucket that has refilled
// to burst says nothing a missing bucket does not, so the least recently
// used ones are dropped as soon as they are full (two per call, amortized
// O(1), no goroutine). Only when maxKeys clients are all active within
// burst/rate seconds is a partly used bucket dropped (the least recently
// used): that client starts again with a full burst. Such drops are
// counted in dropped.
//
// A nil *rateLimiter allows everything (the limit is off).
type rateLimiter struct {
	rate    float64          // tokens per second; set at construction
	burst   float64          // bucket capacity; set at construction
	maxKeys int              // set at construction
	now     func() time.Time // set at construction; time.Now outside tests

	mu      sync.Mutex
	keys    map[string]*list.Element // guarded by mu: key -> element of lru
	lru     list.List                // guarded by mu: *bucket, most recently used first
	dropped int                      // guarded by mu: partly used buckets dropped at maxKeys
}

type bucket struct {
	key    string
	tokens float64   // available at time at
	at     time.Time // when tokens was last brought up to date
}

// newRateLimiter returns a limiter, or nil (no limit) when rate < 0.
// burst is at least 1.
func newRateLimiter(rate float64, burst, maxKeys int, now func() time.Time) *rateLimiter {
	if rate < 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &rateLimiter{
		rate:    rate,
		burst:   float64(max(burst, 1)),
		maxKeys: max(maxKeys, 1),
		now:     now,
		keys:    make(map[string]*list.Element),
	}
}

// allow takes one token from key's bucket. When there is none it reports
// false and how long until there will be one.
func (l *rateLimiter) allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now, 2)
	var b *bucket
	if e := l.keys[key]; e != nil {
		b = e.Value.(*bucket)
		l.refill(b, now)
		l.lru.MoveToFront(e)
	} else {
		if len(l.keys) >= l.maxKeys {
			l.sweep(now, 1)
		}
		if len(l.keys) >= l.maxKeys {
			l.remove(l.lru.Back())
			l.dropped++
		}
		b = &bucket{key: key, tokens: l.burst, at: now}
		l.keys[key] = l.lru.PushFront(b)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if l.rate == 0 {
		return false, time.Duration(math.MaxInt64)
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// refill brings b's tokens up to now. A clock that went backwards adds
// nothing.
func (l *rateLimiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.at = now
	}
}

// sweep drops up to n least recently used buckets that have refilled to
// burst. Called with mu held.
func (l *rateLimiter) sweep(now time.Time, n int) {
	for range n {
		e := l.lru.Back()
		if e == nil {
			return
		}
		b := e.Value.(*bucket)
		if b.tokens+now.Sub(b.at).Seconds()*l.rate < l.burst {
			return
		}
		l.remove(e)
	}
}

func (l *rateLimiter) remove(e *list.Element) {
	delete(l.keys, e.Value.(*bucket).key)
	l.lru.Remove(e)
}

// size returns the number of tracked keys.
func (l *rateLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// rateLimitError is a request refused by a rate limit; answered 429 with
// Retry-After.
type rateLimitError struct {
	what  string // "publish" or "snapshot"
	retry int    // seconds, at least 1
}

func (e *rateLimitError) Error() string {
	return fmt.Sprintf("too many %s requests from this client, retry after %d s", e.what, e.retry)
}

// rateLimit is middleware charging each request one token of l, keyed by
// the client's address. A long-poll is one request however long it waits.
// Rejections are counted in refcast_rejected_total{limit=what+"_rate"}.
func (s *Server) rateLimit(l *rateLimiter, what string) echo.MiddlewareFunc {
	label := what + "_rate"
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if l == nil {
			return next
		}
		return func(c echo.Context) error {
			ok, wait := l.allow(s.rateKey(c.Request()))
			if ok {
				return next(c)
			}
			s.metrics.rejected.WithLabelValues(label).Inc()
			secs := int64(math.Ceil(wait.Seconds()))
			secs = max(1, min(secs, 3600))
			return &rateLimitError{what: what, retry: int(secs)}
		}
	}
}

// rateKey is the rate limits' client key: the IP address, or for IPv6 its
// /64, which one host or customer typically holds whole (keying by address
// would give it 2^64 buckets). A node behind a reverse proxy sees the
// proxy's address for everyone, so the limits apply to the proxy as a whole.
func (s *Server) rateKey(r *http.Request) string {
	host := s.clientKey(r)
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return host
	}
	return p.String()
}
