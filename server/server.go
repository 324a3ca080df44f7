// Package server is a refcast node: it follows the bus and serves clients
// over HTTP — Server-Sent Events on /v1/events, snapshots, deltas and
// long-polls on /v1/refs, publishing on /v1/publish and from the forges'
// webhooks on /v1/hooks/<forge>, health and metrics.
//
// Nodes are stateless: all state lives in the bus, so any number of them
// can serve the same deployment behind a load balancer. The fan-out engine
// (package fanout) and the cursors know nothing about echo; echo only
// routes, and handlers call the engine's verbs.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/forge"
	"github.com/refcast/refcast/server/fanout"
	"github.com/refcast/refcast/wire"
)

// Defaults for Options. Those of the fan-out engine are its own (package
// fanout documents why each).
const (
	DefaultHeartbeat      = fanout.DefaultHeartbeat
	DefaultRetry          = fanout.DefaultRetry
	DefaultWriteTimeout   = fanout.DefaultWriteTimeout
	DefaultStallTimeout   = fanout.DefaultStallTimeout
	DefaultMaxQueue       = fanout.DefaultMaxQueue
	DefaultMaxConnections = fanout.DefaultMaxConnections
	DefaultMaxQueuedBytes = fanout.DefaultMaxQueuedBytes
	DefaultMaxPerClient   = fanout.DefaultMaxPerClient // unlimited
	// DefaultMaxPerAnonymous is the streams one anonymous client key (IP,
	// IPv6 /64) may hold: a browser tab or bot needs one or a few, a
	// household or office behind one address a few dozen; 64 of the
	// costliest accepted streams pin about 1 MB (docs/security.md).
	DefaultMaxPerAnonymous = 64
	DefaultMaxWait         = 60 * time.Second
	DefaultSnapshotMaxAge  = 1 * time.Second
	DefaultDrain           = 10 * time.Second
	DefaultMaxBody         = 4 << 20
	DefaultBatchDelay      = fanout.DefaultBatchDelay
	DefaultMaxSnapshot     = 1000 // repos in one snapshot

	DefaultReadHeaderTimeout = 10 * time.Second
	// Per client (IP address, or IPv6 /64): requests per second and burst.
	DefaultPublishRate   = 50
	DefaultPublishBurst  = 100
	DefaultSnapshotRate  = 100
	DefaultSnapshotBurst = 200
)

// DefaultMaxSeedBody bounds the body of a seed (bus.Push.Seed) from
// `refcast sync`: bus.MaxRefsPerSeed refs at about 110 bytes each are
// 22 MB; 64 MiB leaves room for long ref names and matches the hook's
// spool file limit.
const DefaultMaxSeedBody = 64 << 20

// Authorizer decides who may read and publish. The server maps its errors:
// ErrUnauthorized to 401, ErrForbidden to 403 (the message is shown).
type Authorizer interface {
	// AuthorizeRead checks a subscription; the returned time, when not
	// zero, is when the credential expires and the stream must end.
	AuthorizeRead(token string, f *bus.Filter) (time.Time, error)
	AuthorizePublish(token string, repo string) error
}

// Errors an Authorizer returns, wrapped with a message for the client.
var (
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
)

// Options configure a Server. Zero values take the defaults above.
type Options struct {
	Bus    bus.Bus      // required
	Logger *slog.Logger // slog.Default() when nil
	// PublishToken, when set, is a shared secret accepted on /v1/publish.
	// With neither it nor an Authorizer, publishing is refused.
	PublishToken string
	// Auth, when set, authorizes every read and publish; nil serves reads
	// anonymously.
	Auth Authorizer
	// TokenFromRequest extracts the credential (header, cookie, query).
	TokenFromRequest func(*http.Request) string
	// Subject, when set, is the sub of a token that verifies ("" if it
	// does not), for the log lines of requests (accesslog.go).
	Subject func(token string) string
	// AccessLog logs one line per request; 401 and 403 are logged anyway.
	AccessLog bool

	Heartbeat      time.Duration // comment line on idle streams
	Retry          time.Duration // base of the jittered retry: hint
	WriteTimeout   time.Duration // a stream stuck this long is evicted
	StallTimeout   time.Duration // how long a writer waits on one full socket of a client known to read
	MaxQueue       int           // frames queued per subscriber before eviction
	MaxConnections int           // streams and long-polls per node; 503 beyond
	// MaxQueuedBytes bounds the bytes the node's streams hold in queued,
	// unwritten frames (fanout.Options.MaxQueuedBytes); 0 takes
	// DefaultMaxQueuedBytes.
	MaxQueuedBytes int64
	MaxPerClient   int // per client IP (IPv6: /64), anonymous or not; 0 = unlimited
	// MaxPerAnonymous limits the streams of clients that show no
	// credential (every client when Auth is nil) per client IP (IPv6:
	// /64), where stricter than MaxPerClient. 0 takes
	// DefaultMaxPerAnonymous; negative: no such limit.
	MaxPerAnonymous int
	MaxWait         time.Duration // bound on a long-poll's wait=
	SnapshotMaxAge  time.Duration // Cache-Control max-age on /v1/refs
	MaxSnapshot     int           // repos one snapshot may cover
	MaxBody         int64         // publish body bytes
	Writers         int           // writer goroutines; 2×GOMAXPROCS when 0
	// MaxSeedBody is the larger bound on a publish body that holds a seed,
	// read only for a credential verified before the body is (the shared
	// publish token, or a token Subject verifies), so an anonymous client
	// can never make a node buffer more than MaxBody.
	MaxSeedBody int64
	// BatchDelay spaces the writes to a busy connection: one written less
	// than BatchDelay ago gets its next events when BatchDelay has passed,
	// together, so under a high event rate a connection costs one syscall
	// per batch instead of one per event. A connection not written for
	// BatchDelay is written at once, so an event arriving alone is not
	// delayed. DefaultBatchDelay when 0; negative turns batching off.
	BatchDelay time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers (slowloris); the connection is closed without an
	// answer after it.
	ReadHeaderTimeout time.Duration
	// PublishRate and PublishBurst limit POST /v1/publish, SnapshotRate and
	// SnapshotBurst GET and HEAD /v1/refs (a long-poll counts once), per
	// client address (IPv6: per /64): a token bucket of Burst requests
	// refilled at Rate per second; beyond it 429 with Retry-After. 0 takes
	// the default, a negative rate turns the limit off. Behind a reverse
	// proxy every client has the proxy's address: raise or turn off the
	// limits there.
	PublishRate   float64
	PublishBurst  int
	SnapshotRate  float64
	SnapshotBurst int
	// DisableHijack serves every stream on the handler path (one goroutine
	// per connection), for comparison and for environments that forbid it.
	DisableHijack bool
	// TrustedProxies are the load balancers whose X-Forwarded-For is
	// believed when keying per-client limits. Empty: the peer address.
	TrustedProxies []netip.Prefix
	// CORSOrigins lists origins allowed to read from a browser; "*" allows
	// any. Empty disables CORS headers.
	CORSOrigins []string
	// Dashboard serves "/" when set.
	Dashboard http.Handler
	// Registry receives the node's metrics; a new one when nil.
	Registry *prometheus.Registry
	// Version is the node's version, the version label of
	// refcast_build_info; "" reports "unknown".
	Version string
	// Readiness, when set, is consulted by /readyz besides the hub's state
	// (e.g. a bus ping).
	Readiness func(context.Context) error
	// Git configures the /git/ endpoints for git clients (server/git.go).
	Git GitOptions
	// Webhooks, when set, verifies and translates the forges' push
	// webhooks on /v1/hooks/<forge> (server/webhooks.go); nil answers 404.
	Webhooks *forge.Receiver
}

// Server is one refcast node.
type Server struct {
	opts    Options
	log     *slog.Logger
	engine  *fanout.Engine // set at construction
	metrics *metrics
	echo    *echo.Echo
	reg     *prometheus.Registry

	publishLimit  *rateLimiter // set at construction; nil when off
	snapshotLimit *rateLimiter // set at construction; nil when off

	mu      sync.Mutex
	running bool
}

// New validates options and builds a node; Serve runs it.
func New(opts Options) (*Server, error) {
	if opts.Bus == nil {
		return nil, errors.New("server: a bus is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.Heartbeat, DefaultHeartbeat)
	def(&opts.Retry, DefaultRetry)
	def(&opts.WriteTimeout, DefaultWriteTimeout)
	def(&opts.StallTimeout, DefaultStallTimeout)
	def(&opts.MaxWait, DefaultMaxWait)
	def(&opts.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	if opts.PublishRate == 0 {
		opts.PublishRate = DefaultPublishRate
	}
	if opts.PublishBurst <= 0 {
		opts.PublishBurst = DefaultPublishBurst
	}
	if opts.SnapshotRate == 0 {
		opts.SnapshotRate = DefaultSnapshotRate
	}
	if opts.SnapshotBurst <= 0 {
		opts.SnapshotBurst = DefaultSnapshotBurst
	}
	if opts.SnapshotMaxAge < 0 {
		opts.SnapshotMaxAge = 0
	} else if opts.SnapshotMaxAge == 0 {
		opts.SnapshotMaxAge = DefaultSnapshotMaxAge
	}
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = DefaultMaxQueue
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.MaxPerAnonymous == 0 {
		opts.MaxPerAnonymous = DefaultMaxPerAnonymous
	}
	if opts.MaxSnapshot <= 0 {
		opts.MaxSnapshot = DefaultMaxSnapshot
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.MaxSeedBody <= 0 {
		opts.MaxSeedBody = DefaultMaxSeedBody
	}
	opts.MaxSeedBody = max(opts.MaxSeedBody, opts.MaxBody)
	if opts.Writers <= 0 {
		opts.Writers = 2 * runtime.GOMAXPROCS(0)
	}
	if opts.BatchDelay == 0 {
		opts.BatchDelay = DefaultBatchDelay
	}
	if opts.TokenFromRequest == nil {
		opts.TokenFromRequest = wire.BearerToken
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	m := newMetrics(opts.Registry, opts.Version)
	s := &Server{opts: opts, log: opts.Logger, metrics: m, reg: opts.Registry,
		publishLimit:  newRateLimiter(opts.PublishRate, opts.PublishBurst, rateLimitKeys, nil),
		snapshotLimit: newRateLimiter(opts.SnapshotRate, opts.SnapshotBurst, rateLimitKeys, nil)}
	s.engine = fanout.New(opts.Bus, fanout.Options{
		Heartbeat:       opts.Heartbeat,
		Retry:           opts.Retry,
		WriteTimeout:    opts.WriteTimeout,
		StallTimeout:    opts.StallTimeout,
		MaxQueue:        opts.MaxQueue,
		MaxConnections:  opts.MaxConnections,
		MaxQueuedBytes:  opts.MaxQueuedBytes,
		MaxPerClient:    opts.MaxPerClient,
		MaxPerAnonymous: max(opts.MaxPerAnonymous, 0),
		Writers:         opts.Writers,
		BatchDelay:      opts.BatchDelay,
		Logger:          opts.Logger,
		Metrics:         m.engine(),
	})
	git, err := s.gitHandler()
	if err != nil {
		return nil, err
	}
	s.echo = s.routes()
	mountGit(s.echo, git)
	return s, nil
}

// Handler returns the node's HTTP handler.
// Requests with both Content-Length and Transfer-Encoding are refused only
// on connections Serve accepted (see framing.go).
func (s *Server) Handler() http.Handler { return checkFraming(s.echo) }

// Ready reports whether the node follows the bus and is not draining.
func (s *Server) Ready(ctx context.Context) error {
	if _, ok := s.engine.Position(); !ok {
		return fanout.ErrNotReady
	}
	if s.engine.Draining() {
		return fanout.ErrDraining
	}
	if s.opts.Readiness != nil {
		return s.opts.Readiness(ctx)
	}
	return nil
}

// Serve runs the node on ln until ctx ends, then shuts down in order: stop
// accepting, drain streams over drain (each told a jittered retry:), wait
// for handlers, stop the hub. It returns after every goroutine it started
// has exited.
func (s *Server) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("server: already running")
	}
	s.running = true
	s.mu.Unlock()

	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	hubErr := make(chan error, 1)
	go func() { hubErr <- s.engine.Run(hubCtx) }()

	srv := &http.Server{
		Handler:           s.Handler(),
		ConnContext:       framingConnContext,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.Protocols.SetHTTP2(true)

	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(framingListener{ln}) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-srvErr:
		err = fmt.Errorf("serve: %w", err)
	case err = <-hubErr:
		stopHub()
		_ = srv.Close()
		<-srvErr
		return fmt.Errorf("hub: %w", err)
	}

	s.log.Info("shutting down", "drain", drain, "streams", s.engine.Count())
	drainCtx, cancel := context.WithTimeout(context.Background(), drain+5*time.Second)
	// Drain first, while the listener still answers (new streams get 503
	// so the balancer moves them elsewhere), then stop accepting.
	s.engine.Drain(drainCtx, drain)
	shutdownErr := srv.Shutdown(drainCtx)
	cancel()
	if shutdownErr != nil {
		_ = srv.Close()
	}
	stopHub()
	if herr := <-hubErr; herr != nil && !errors.Is(herr, bus.ErrClosed) && err == nil {
		err = herr
	}
	if err != nil && errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.httpError
	e.Use(s.accessLog)
	e.Use(s.cors)
	e.GET(wire.PathEvents, s.handleEvents)
	snapshotLimit := s.rateLimit(s.snapshotLimit, "snapshot")
	e.GET(wire.PathRefs, s.handleRefs, snapshotLimit)
	e.HEAD(wire.PathRefs, s.handleRefs, snapshotLimit)
	e.GET(wire.PathRepos, s.handleRepos, snapshotLimit)
	e.GET(wire.PathHistory, s.handleHistory, snapshotLimit)
	e.POST(wire.PathPublish, s.handlePublish, s.rateLimit(s.publishLimit, "publish"))
	for _, f := range forge.Forges {
		// The same bucket as /v1/publish: a webhook is a publish.
		e.POST(wire.PathHooks+"/"+string(f), s.handleHook(f), s.rateLimit(s.publishLimit, "publish"))
	}
	e.GET(wire.PathHealth, func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET(wire.PathReady, func(c echo.Context) error {
		if err := s.Ready(c.Request().Context()); err != nil {
			return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "error": err.Error()})
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
	e.GET(wire.PathMetrics, echo.WrapHandler(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))
	if s.opts.Dashboard != nil {
		e.GET("/*", echo.WrapHandler(s.opts.Dashboard))
	}
	return e
}

// cors adds CORS headers for allowed origins and answers preflights.
func (s *Server) cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		origin := c.Request().Header.Get("Origin")
		if origin == "" || len(s.opts.CORSOrigins) == 0 {
			return next(c)
		}
		allowed := ""
		for _, o := range s.opts.CORSOrigins {
			if o == "*" || o == origin {
				allowed = o
				break
			}
		}
		if allowed == "" {
			return next(c)
		}
		h := c.Response().Header()
		h.Set("Access-Control-Allow-Origin", allowed)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", "ETag, Retry-After")
		if allowed != "*" {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		if c.Request().Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, If-None-Match")
			h.Set("Access-Control-Max-Age", "600")
			return c.NoContent(http.StatusNoContent)
		}
		return next(c)
	}
}

// corsHeaders returns the CORS lines a hijacked response must carry.
func (s *Server) corsHeaders(r *http.Request) string {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	for _, o := range s.opts.CORSOrigins {
		if o == "*" {
			return "Access-Control-Allow-Origin: *\r\n"
		}
		if o == origin && validHeaderValue(origin) {
			return "Access-Control-Allow-Origin: " + origin + "\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
		}
	}
	return ""
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
