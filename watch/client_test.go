package watch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"
	"go.uber.org/goleak"
	"gopkg.in/cenkalti/backoff.v1"
)

// These tests pin the traps of github.com/r3labs/sse/v2 v2.10.0 (the
// TestLibTrap* ones show the library's behaviour, so an upgrade that
// changes it is noticed) and prove that Client neutralises each one.

// sseHeaders starts an event stream response.
func sseHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
}

func write(w http.ResponseWriter, s string) {
	fmt.Fprint(w, s)
	w.(http.Flusher).Flush()
}

// abort ends the response without the final chunk: the client sees an
// unexpected EOF, not a clean end of stream.
func abort() { panic(http.ErrAbortHandler) }

// request records what one connection asked for.
type request struct {
	lastEventID, since string
	at                 time.Time
}

type recorder struct {
	mu   sync.Mutex
	reqs []request
}

func (r *recorder) add(req *http.Request) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, request{req.Header.Get("Last-Event-ID"), req.URL.Query().Get("since"), time.Now()})
	return len(r.reqs)
}

func (r *recorder) all() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

func newTestClient(t *testing.T, url string, mod func(*ClientOptions)) *Client {
	t.Helper()
	o := ClientOptions{URL: url, Repos: []string{"acme/*"}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// collect runs c until want frames arrived or the timeout.
func collect(t *testing.T, c *Client, want int) []Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []Frame
	err := c.Run(ctx, func(_ context.Context, f Frame) error {
		got = append(got, f)
		if len(got) == want {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v after %d frames, want %d frames", err, len(got), want)
	}
	return got
}

// Trap 1: a clean end of stream is success to the library: it returns and
// never reconnects.
func TestLibTrapNoReconnectAfterCleanEOF(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		sseHeaders(w)
		write(w, "id: c1\nevent: ref\ndata: {}\n\n")
	}))
	defer srv.Close()
	c := sse.NewClient(srv.URL)
	err := c.SubscribeWithContext(context.Background(), "", func(*sse.Event) {})
	if err != nil || n.Load() != 1 {
		t.Fatalf("library: err=%v connections=%d; the trap is gone, revisit Client", err, n.Load())
	}
}

func TestClientReconnectsAfterCleanEOF(t *testing.T) {
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := rec.add(r)
		sseHeaders(w)
		write(w, fmt.Sprintf("id: c%d\nevent: ref\ndata: {\"n\":%d}\n\n", n, n))
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, func(o *ClientOptions) { o.Since = "c0" })
	got := collect(t, c, 3)
	for i, f := range got {
		if want := fmt.Sprintf("c%d", i+1); f.ID != want || f.Event != "ref" {
			t.Errorf("frame %d = %+v, want id %s", i, f, want)
		}
	}
	for i, r := range rec.all()[:3] {
		if want := fmt.Sprintf("c%d", i); r.lastEventID != want || r.since != want {
			t.Errorf("connection %d resumed with Last-Event-ID %q since %q, want %q", i+1, r.lastEventID, r.since, want)
		}
	}
	if c.Cursor() != "c3" {
		t.Errorf("Cursor = %q", c.Cursor())
	}
}

// fakeClock is a backoff.Clock and a sleep that advance a fake time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Trap 2: the default backoff measures 15 minutes from the first attempt,
// so after a connection that lived longer, the first drop ends the
// subscription without a single retry.
func TestLibTrapBackoffGivesUpAfterLongConnection(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 1 {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		sseHeaders(w)
		write(w, "id: c1\nevent: ref\ndata: {}\n\n")
		clock.advance(16 * time.Minute) // the connection lived 16 minutes
		abort()
	}))
	defer srv.Close()
	b := backoff.NewExponentialBackOff() // what the library uses by default
	b.Clock = clock
	b.Reset()
	c := sse.NewClient(srv.URL)
	c.ReconnectStrategy = b
	err := c.SubscribeWithContext(context.Background(), "", func(*sse.Event) {})
	if err == nil || n.Load() != 1 {
		t.Fatalf("library: err=%v connections=%d; the trap is gone, revisit Client", err, n.Load())
	}
}

func TestClientOutlivesLibraryBackoffLimit(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch k := n.Add(1); {
		case k == 1:
			sseHeaders(w)
			write(w, "id: c1\nevent: ref\ndata: {}\n\n")
			clock.advance(16 * time.Minute)
			abort()
		case clock.Now().Before(time.Unix(0, 0).Add(16*time.Minute + time.Hour)): // an hour-long outage
			http.Error(w, "down", http.StatusServiceUnavailable)
		default:
			sseHeaders(w)
			write(w, "id: c2\nevent: ref\ndata: {}\n\n")
		}
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, func(o *ClientOptions) {
		o.MinBackoff, o.MaxBackoff = time.Second, 30*time.Second
		o.sleep = func(ctx context.Context, d time.Duration) error { clock.advance(d); return ctx.Err() }
	})
	got := collect(t, c, 2)
	if got[1].ID != "c2" {
		t.Fatalf("frames %+v", got)
	}
	// Each delay is at most MaxBackoff plus 50% jitter (45 s), so an hour
	// of outage takes at least 3600/45 = 80 attempts whatever the jitter
	// drew; the library alone gives up after 15 minutes.
	if k := n.Load(); k < 80 {
		t.Errorf("only %d attempts in an hour of outage with a 30s..45s cap", k)
	}
}

// Trap 3: SubscribeChan's read loop stays blocked on its error channel
// after Unsubscribe.
func TestLibTrapSubscribeChanLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		write(w, "id: c1\nevent: ref\ndata: {}\n\n")
		<-r.Context().Done()
	}))
	c := sse.NewClient(srv.URL)
	c.ReconnectStrategy = &backoff.StopBackOff{}
	ch := make(chan *sse.Event)
	if err := c.SubscribeChan("", ch); err != nil {
		t.Fatal(err)
	}
	<-ch
	c.Unsubscribe(ch)
	srv.CloseClientConnections()
	srv.Close()
	c.Connection.CloseIdleConnections()
	if err := goleak.Find(opt); err == nil || !strings.Contains(err.Error(), "readLoop") {
		t.Fatalf("library: no leaked readLoop (%v); the trap is gone", err)
	}
}

func TestClientNoGoroutineLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := n.Add(1)
		sseHeaders(w)
		write(w, fmt.Sprintf("retry: 5\n\nid: c%d\nevent: ref\ndata: {}\n\n", k))
		if k%2 == 0 {
			abort()
		}
		if k == 3 {
			<-r.Context().Done() // the client cancels while connected
		}
	}))
	c := newTestClient(t, srv.URL, nil)
	collect(t, c, 3)
	srv.Close()
}

// Trap 4: a frame over 64 KiB fails the stream (bufio.ErrTooLong); a
// reconnect from the same cursor meets the same frame again.
func TestLibTrapLargeEvent(t *testing.T) {
	big := strings.Repeat("x", 200<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		write(w, "id: c1\nevent: ref\ndata: "+big+"\n\n")
	}))
	defer srv.Close()
	c := sse.NewClient(srv.URL)
	c.ReconnectStrategy = &backoff.StopBackOff{}
	var got int
	err := c.SubscribeWithContext(context.Background(), "", func(*sse.Event) { got++ })
	if err == nil || got != 0 {
		t.Fatalf("library: err=%v frames=%d; the trap is gone", err, got)
	}
}

func TestClientLargeEvent(t *testing.T) {
	big := `{"repo":"acme/app","pad":"` + strings.Repeat("x", 200<<10) + `"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		write(w, "id: c1\nevent: ref\ndata: "+big+"\n\n")
		<-r.Context().Done()
	}))
	defer srv.Close()
	got := collect(t, newTestClient(t, srv.URL, nil), 1)
	if string(got[0].Data) != big {
		t.Fatalf("got %d bytes, want %d", len(got[0].Data), len(big))
	}

	// Past MaxEventSize the error is permanent and says so.
	c := newTestClient(t, srv.URL, func(o *ClientOptions) { o.MaxEventSize = 64 << 10 })
	err := c.Run(context.Background(), func(context.Context, Frame) error { return nil })
	if !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("Run = %v, want ErrEventTooLarge", err)
	}
}

// Trap 5: retry: is parsed into Event.Retry but never used for the delay.
func TestLibTrapRetryIgnored(t *testing.T) {
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		if rec.add(r) > 1 {
			return // a clean end: the library stops (trap 1)
		}
		write(w, "retry: 10\n\nid: c1\nevent: ref\ndata: {}\n\n")
		abort()
	}))
	defer srv.Close()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.RandomizationFactor = 400*time.Millisecond, 0
	b.MaxElapsedTime = 2 * time.Second
	c := sse.NewClient(srv.URL)
	c.ReconnectStrategy = b
	var retry string
	_ = c.SubscribeWithContext(context.Background(), "", func(e *sse.Event) {
		if len(e.Retry) > 0 {
			retry = string(e.Retry)
		}
	})
	reqs := rec.all()
	if retry != "10" || len(reqs) < 2 || reqs[1].at.Sub(reqs[0].at) < 300*time.Millisecond {
		t.Fatalf("library: retry=%q, reconnected after %v; the trap is gone", retry, reqs[1].at.Sub(reqs[0].at))
	}
}

func TestClientHonoursRetry(t *testing.T) {
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := rec.add(r)
		sseHeaders(w)
		write(w, fmt.Sprintf("retry: 50\n\nid: c%d\nevent: ref\ndata: {}\n\n", k))
	}))
	defer srv.Close()
	// The delays the client chose are recorded, not timed: 50 ms plus at
	// most 50% jitter, never the 5 s MinBackoff.
	var mu sync.Mutex
	var delays []time.Duration
	c := newTestClient(t, srv.URL, func(o *ClientOptions) {
		o.MinBackoff, o.MaxBackoff = 5*time.Second, time.Minute
		o.sleep = func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			delays = append(delays, d)
			mu.Unlock()
			return ctx.Err()
		}
	})
	collect(t, c, 3)
	mu.Lock()
	defer mu.Unlock()
	if len(delays) < 2 {
		t.Fatalf("%d reconnect delays for 3 connections", len(delays))
	}
	for i, d := range delays[:2] {
		if d < 50*time.Millisecond || d > 75*time.Millisecond {
			t.Errorf("reconnect %d after %v, want 50ms plus up to 50%% jitter (retry: 50), not the 5s MinBackoff", i+1, d)
		}
	}
}

func TestClientIdleTimeout(t *testing.T) {
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := rec.add(r)
		sseHeaders(w)
		write(w, fmt.Sprintf("id: c%d\nevent: hello\ndata: {}\n\n", k))
		<-r.Context().Done() // a half-open stream: nothing more, not even heartbeats
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, func(o *ClientOptions) { o.IdleTimeout = 100 * time.Millisecond })
	got := collect(t, c, 2)
	if got[1].ID != "c2" || rec.all()[1].lastEventID != "c1" {
		t.Fatalf("frames %+v", got)
	}
}

func TestClientStatus(t *testing.T) {
	tests := []struct {
		name      string
		code      int
		permanent bool
	}{
		{"bad request", http.StatusBadRequest, true},
		{"unauthorized", http.StatusUnauthorized, true},
		{"forbidden", http.StatusForbidden, true},
		{"unavailable", http.StatusServiceUnavailable, false},
		{"internal", http.StatusInternalServerError, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int32
			var auth atomic.Value
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				auth.Store(r.Header.Get("Authorization"))
				if n.Add(1) == 1 {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tt.code)
					fmt.Fprintf(w, `{"error":"nope %d","status":%d}`, tt.code, tt.code)
					return
				}
				sseHeaders(w)
				write(w, "id: c1\nevent: hello\ndata: {}\n\n")
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL, func(o *ClientOptions) { o.Token = "s3cret" })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.Run(ctx, func(context.Context, Frame) error { cancel(); return nil })
			var se *StatusError
			if tt.permanent {
				if !errors.As(err, &se) || se.Code != tt.code || !strings.Contains(se.Message, "nope") {
					t.Fatalf("Run = %v, want a permanent %d", err, tt.code)
				}
			} else if !errors.Is(err, context.Canceled) || n.Load() != 2 {
				t.Fatalf("Run = %v after %d connections, want a retry", err, n.Load())
			}
			if auth.Load() != "Bearer s3cret" {
				t.Errorf("Authorization = %q", auth.Load())
			}
		})
	}
}

func TestClientHandlerErrorStops(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		write(w, "id: c1\nevent: ref\ndata: {}\n\n")
		<-r.Context().Done()
	}))
	defer srv.Close()
	boom := errors.New("boom")
	err := newTestClient(t, srv.URL, nil).Run(context.Background(), func(context.Context, Frame) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v", err)
	}
}

func TestNewClientURL(t *testing.T) {
	tests := []struct {
		name, url, want string
		refs            []string
		bad             bool
	}{
		{name: "base", url: "http://h:8080", want: "http://h:8080/v1/events?repo=acme%2Fapp"},
		{name: "slash", url: "http://h/", want: "http://h/v1/events?repo=acme%2Fapp"},
		{name: "prefix", url: "https://lb/refcast", want: "https://lb/refcast/v1/events?repo=acme%2Fapp"},
		{name: "full", url: "http://h/v1/events", want: "http://h/v1/events?repo=acme%2Fapp"},
		{name: "refs", url: "http://h", refs: []string{"refs/heads/*", "^refs/pull/*"}, want: "http://h/v1/events?ref=refs%2Fheads%2F%2A&ref=%5Erefs%2Fpull%2F%2A&repo=acme%2Fapp"},
		{name: "scheme", url: "ftp://h", bad: true},
		{name: "no host", url: "localhost:8080", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(ClientOptions{URL: tt.url, Repos: []string{"acme/app"}, Refs: tt.refs})
			if tt.bad {
				if err == nil {
					t.Fatalf("NewClient(%q) accepted", tt.url)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.base.String(); got != tt.want {
				t.Errorf("URL = %s, want %s", got, tt.want)
			}
		})
	}
}
