// Package watch is the bot side of refcast: it follows a node's
// /v1/events stream, prints each change, and runs a command per change with
// debounce, per-repo serialisation, retries and a durable cursor.
//
// Client is the connection: it wraps github.com/r3labs/sse/v2 so that none
// of that library's reconnect behaviour reaches a caller (it reconnects
// forever, after clean ends of stream too, with its own backoff, honouring
// the server's retry: hint and resuming from the latest cursor). Watcher is
// what a bot does with the frames. The package is not a server and knows
// nothing about flags or the process environment: cmd/refcast wires it.
package watch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/r3labs/sse/v2"
	"github.com/refcast/refcast/wire"
	"gopkg.in/cenkalti/backoff.v1"
)

// Defaults for ClientOptions.
const (
	// DefaultMinBackoff is the first reconnect delay when the server sent no
	// retry: hint.
	DefaultMinBackoff = time.Second
	// DefaultMaxBackoff caps the reconnect delay. There is no cap on the
	// number of attempts or on the total time: a client reconnects forever.
	DefaultMaxBackoff = 30 * time.Second
	// DefaultIdleTimeout drops a stream that delivered no byte for this long
	// (the server sends a heartbeat every 15s on idle streams), so a
	// half-open connection is noticed.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxEventSize is the largest frame accepted. The library's own
	// default is 64 KiB, smaller than a reset snapshot of a busy repo.
	DefaultMaxEventSize = 32 << 20
	// DefaultHeaderTimeout bounds the wait for the response headers.
	DefaultHeaderTimeout = 30 * time.Second
)

// ErrEventTooLarge is returned by Client.Run when a frame exceeds
// ClientOptions.MaxEventSize. Reconnecting would fetch the same frame again,
// so it is not retried.
var ErrEventTooLarge = errors.New("event larger than the maximum event size")

// errIdle is the cause of a connection dropped by the idle timeout.
var errIdle = errors.New("no data from the server within the idle timeout")

// StatusError is a non-200 answer to the subscribe request.
type StatusError struct {
	Code       int
	Message    string        // the server's JSON error, or the status text
	RetryAfter time.Duration // from Retry-After, when sent
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("subscribe: %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Permanent reports whether retrying the same request is pointless: the
// request is invalid (400, e.g. a bad pattern or a corrupt cursor), not
// authorised (401, 403) or aimed at the wrong place (404, 405).
func (e *StatusError) Permanent() bool {
	switch e.Code {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
		http.StatusNotFound, http.StatusMethodNotAllowed:
		return true
	}
	return false
}

// Frame is one SSE message with content: its event name ("message" when the
// server sent none), its id (the cursor; empty when absent) and its data.
// Frames that only carry retry: or comments never reach a handler.
type Frame struct {
	Event string
	ID    string
	Data  []byte
}

// ClientOptions configures a Client. Zero values take the defaults above.
type ClientOptions struct {
	// URL is a node's or load balancer's base URL (http://host:8080); the
	// client appends /v1/events unless the path already ends with it.
	URL   string
	Repos []string // repo names or globs, at least one
	Refs  []string // ref patterns; none means every ref
	// Token is sent as "Authorization: Bearer <Token>" when not empty.
	Token string
	// Since is the cursor to resume from on the first connection.
	Since string

	MinBackoff    time.Duration
	MaxBackoff    time.Duration
	IdleTimeout   time.Duration // negative disables
	MaxEventSize  int
	HeaderTimeout time.Duration
	// HTTPClient, when set, is used as is (its timeouts must allow a stream
	// to live for days). By default the client owns a transport and closes
	// its idle connections when Run returns.
	HTTPClient *http.Client
	Logger     *slog.Logger

	// sleep waits d or until ctx is done; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

// Client follows one subscription. Run may be called once at a time; Cursor
// is safe for concurrent use.
type Client struct {
	opts ClientOptions // set at construction
	base *url.URL      // the events URL without since; set at construction
	http *http.Client  // set at construction
	own  bool          // the client owns http's transport

	mu         sync.Mutex
	cursor     string        // latest id received; guarded by mu
	serverWait time.Duration // latest retry: hint; guarded by mu
}

// parseNodeURL checks a node's base URL, and says how to write it when it
// is not one: "127.0.0.1:8080" (no scheme) is the usual slip.
func parseNodeURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		return nil, fmt.Errorf("node URL %q has no scheme; write http://%s (or https://)", raw, strings.TrimLeft(raw, "/"))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("node URL %q: %w; write http://HOST:PORT or https://HOST", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("node URL %q: scheme %q is not http or https; write http://HOST:PORT or https://HOST", raw, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("node URL %q names no host; write %s://HOST:PORT", raw, u.Scheme)
	}
	return u, nil
}

// NewClient checks opts and returns a client that has not connected yet.
func NewClient(opts ClientOptions) (*Client, error) {
	u, err := parseNodeURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if len(opts.Repos) == 0 {
		return nil, errors.New("at least one repo pattern is required")
	}
	if opts.Since != "" {
		if err := wire.ValidateCursor(opts.Since); err != nil {
			return nil, err
		}
	}
	if !strings.HasSuffix(u.Path, wire.PathEvents) {
		u.Path = strings.TrimSuffix(u.Path, "/") + wire.PathEvents
	}
	q := u.Query()
	q.Del(wire.ParamSince)
	for _, r := range opts.Repos {
		q.Add(wire.ParamRepo, r)
	}
	for _, r := range opts.Refs {
		q.Add(wire.ParamRef, r)
	}
	u.RawQuery = q.Encode()
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&opts.MinBackoff, DefaultMinBackoff)
	def(&opts.MaxBackoff, DefaultMaxBackoff)
	def(&opts.IdleTimeout, DefaultIdleTimeout)
	def(&opts.HeaderTimeout, DefaultHeaderTimeout)
	if opts.MaxEventSize <= 0 {
		opts.MaxEventSize = DefaultMaxEventSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.sleep == nil {
		opts.sleep = sleepCtx
	}
	c := &Client{opts: opts, base: u, cursor: opts.Since, http: opts.HTTPClient}
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = opts.HeaderTimeout
		c.http = &http.Client{Transport: tr}
		c.own = true
	}
	return c, nil
}

// Cursor returns the id of the latest frame received (or Since).
func (c *Client) Cursor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursor
}

// Handler gets each frame in stream order. It runs on the reading
// goroutine: while it blocks, nothing is read. ctx is Run's context. An
// error other than ctx's stops Run.
type Handler func(ctx context.Context, f Frame) error

// Run connects and calls handle for every frame, reconnecting forever with
// exponential backoff and jitter after any failure or end of stream. It
// returns ctx.Err() when ctx is done, the handler's error, ErrEventTooLarge,
// or a *StatusError that is Permanent.
func (c *Client) Run(ctx context.Context, handle Handler) error {
	if c.own {
		defer c.http.CloseIdleConnections()
	}
	failures := 0
	for {
		connected, err := c.connect(ctx, handle)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *StatusError
		switch {
		case errors.Is(err, errHandler):
			return errors.Unwrap(err)
		case errors.Is(err, ErrEventTooLarge):
			return err
		case errors.As(err, &se) && se.Permanent():
			return err
		}
		if connected {
			failures = 0 // the stream was up: start over from the short delay
		}
		d := c.delay(failures)
		if se != nil && se.RetryAfter > d {
			d = se.RetryAfter
		}
		failures++
		if err == nil {
			err = errors.New("the server ended the stream")
		}
		c.opts.Logger.Warn("disconnected, reconnecting", "err", err, "in", d.Round(time.Millisecond))
		if err := c.opts.sleep(ctx, d); err != nil {
			return err
		}
	}
}

// delay is the wait before reconnect attempt n (0 after a healthy stream):
// the server's retry: hint (or MinBackoff) doubled per failure, capped at
// MaxBackoff, plus up to 50% jitter so a fleet spreads out.
func (c *Client) delay(n int) time.Duration {
	c.mu.Lock()
	d := c.serverWait
	c.mu.Unlock()
	if d <= 0 {
		d = c.opts.MinBackoff
	}
	for i := 0; i < n && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.opts.MaxBackoff)
	return d + rand.N(d/2+1)
}

// errHandler wraps a handler's error so Run can tell it from a stream error.
var errHandler = errors.New("handler")

type handlerError struct{ err error }

func (e handlerError) Error() string        { return e.err.Error() }
func (e handlerError) Is(target error) bool { return target == errHandler }
func (e handlerError) Unwrap() error        { return e.err }

// connect runs one connection until it ends. connected reports whether the
// server accepted it (200 with an event stream). The library is used for one
// attempt only: its own reconnect loop is switched off (StopBackOff)
// because it treats a clean end of stream as success and gives up 15
// minutes after its first attempt.
func (c *Client) connect(ctx context.Context, handle Handler) (connected bool, err error) {
	connCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	cursor := c.Cursor()
	u := *c.base
	if cursor != "" {
		q := u.Query()
		q.Set(wire.ParamSince, cursor)
		u.RawQuery = q.Encode()
	}
	sc := sse.NewClient(u.String(), sse.ClientMaxBufferSize(c.opts.MaxEventSize))
	sc.Connection = c.http
	sc.ReconnectStrategy = &backoff.StopBackOff{}
	if c.opts.Token != "" {
		sc.Headers[wire.HeaderAuthorization] = wire.Bearer(c.opts.Token)
	}
	if cursor != "" {
		sc.Headers[wire.HeaderLastEventID] = cursor
	}
	sc.ResponseValidator = func(_ *sse.Client, resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			return statusError(resp)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			resp.Body.Close()
			return &StatusError{Code: resp.StatusCode, Message: fmt.Sprintf("not an event stream (Content-Type %q); is the URL a refcast node?", ct)}
		}
		connected = true
		c.opts.Logger.Info("connected", "url", c.base.Redacted(), "cursor", cursor)
		if c.opts.IdleTimeout > 0 {
			resp.Body = newIdleBody(resp.Body, c.opts.IdleTimeout, func() { cancel(errIdle) })
		}
		return nil
	}

	var herr error
	err = sc.SubscribeWithContext(connCtx, "", func(m *sse.Event) {
		if herr != nil {
			return
		}
		if len(m.Retry) > 0 {
			// The library parses retry: but never uses it.
			if ms, perr := strconv.Atoi(strings.TrimSpace(string(m.Retry))); perr == nil && ms >= 0 {
				c.mu.Lock()
				c.serverWait = time.Duration(ms) * time.Millisecond
				c.mu.Unlock()
			}
		}
		if len(m.Event) == 0 && len(m.Data) == 0 {
			return // retry-only frame
		}
		f := Frame{Event: string(m.Event), ID: string(m.ID), Data: m.Data}
		if f.Event == "" {
			f.Event = wire.EventMessage
		}
		if f.ID != "" {
			c.mu.Lock()
			c.cursor = f.ID
			c.mu.Unlock()
		}
		if e := handle(ctx, f); e != nil {
			herr = e
			cancel(errHandler)
		}
	})
	switch {
	case herr != nil:
		return connected, handlerError{herr}
	case errors.Is(err, bufio.ErrTooLong):
		return connected, fmt.Errorf("%w (%d bytes)", ErrEventTooLarge, c.opts.MaxEventSize)
	case context.Cause(connCtx) == errIdle:
		return connected, errIdle
	}
	return connected, err
}

func statusError(resp *http.Response) error {
	defer resp.Body.Close()
	se := &StatusError{Code: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var msg wire.Error
	if json.Unmarshal(body, &msg) == nil && msg.Error != "" {
		se.Message = msg.Error
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		se.RetryAfter = time.Duration(s) * time.Second
	}
	return se
}

// idleBody calls onIdle when no Read returned for d.
type idleBody struct {
	io.ReadCloser
	t *time.Timer
	d time.Duration
}

func newIdleBody(rc io.ReadCloser, d time.Duration, onIdle func()) *idleBody {
	return &idleBody{ReadCloser: rc, d: d, t: time.AfterFunc(d, onIdle)}
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.t.Reset(b.d)
	return n, err
}

func (b *idleBody) Close() error {
	b.t.Stop()
	return b.ReadCloser.Close()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
