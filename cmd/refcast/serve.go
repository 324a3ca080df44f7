//go:build !windows

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/gitfront"
	"github.com/refcast/refcast/hook"
	"github.com/refcast/refcast/server"
)

// serveConfig is everything `refcast serve` is told.
type serveConfig struct {
	listen         string
	publishToken   string
	publishTokFile string
	redis          string
	data           string
	partitions     int
	history        int
	historyAge     time.Duration
	spool          string
	queue          string
	authSecretFile string
	authJWKS       string
	authIssuer     string
	authAudience   string
	public         listFlag
	maxConnections int
	maxQueuedBytes int64
	maxPerClient   int
	// maxPerClientSet: --max-per-client was given (flag or environment),
	// replacing the default limit on anonymous clients.
	maxPerClientSet bool
	publishRate     float64
	publishBurst    int
	snapshotRate    float64
	snapshotBurst   int
	heartbeat       time.Duration
	batchDelay      time.Duration
	retry           time.Duration
	drain           time.Duration
	maxWait         time.Duration
	corsOrigins     listFlag
	trustedProxies  listFlag
	commitURL       string
	logLevel        string
	logFormat       string
	accessLog       bool
	debugAddr       string
	gitUpstream     string
	gitFeatures     listFlag

	webhookSecretFile string
	webhookLowercase  bool
	webhookRepoPrefix string
}

func runServe(ctx context.Context, args []string, env Env) error {
	c, err := parseServeFlags(args, env)
	if err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, c.logFormat, env)
	if err != nil {
		return err
	}
	trusted, err := c.trustedPrefixes()
	if err != nil {
		return err
	}
	if err := c.readPublishToken(); err != nil {
		return err
	}
	hooks, err := c.webhookReceiver()
	if err != nil {
		return err
	}

	b, closeBus, err := openServeBus(ctx, c, log)
	if err != nil {
		return err
	}
	defer closeBus()
	opts := c.serverOptions(b, log, trusted)
	opts.Webhooks = hooks
	release, err := wireServeExtras(ctx, c, &opts, log)
	if err != nil {
		return err
	}
	defer release()
	srv, err := server.New(opts)
	if err != nil {
		return err
	}
	var drainers sync.WaitGroup
	defer drainers.Wait() // before the bus closes: defers run last-in first-out
	if c.spool != "" {
		drainCtx, stopDrain := context.WithCancel(ctx)
		defer stopDrain()
		drainers.Go(func() { hook.DrainLoop(drainCtx, c.spool, hook.BusPublisher{Bus: b}, hook.DefaultDrainEvery, log) })
		opts.Registry.MustRegister(spoolDepth(c.spool))
	}
	if c.queue != "" {
		// Its own context: serve returning for any reason (a failed
		// listen, say) stops it, or drainers.Wait would wait for a signal.
		queueCtx, stopQueue := context.WithCancel(ctx)
		defer stopQueue()
		if err := startQueueDrain(queueCtx, c.queue, b, env, &drainers, log); err != nil {
			return err
		}
		opts.Registry.MustRegister(queueDepth(c.queue))
	}
	ln, err := listenServe(ctx, c.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.listen, err)
	}
	if c.debugAddr != "" {
		stopDebug, err := startDebug(c.debugAddr, log)
		if err != nil {
			_ = ln.Close()
			return err
		}
		defer stopDebug()
	}
	logServeStart(log, c, &opts, ln.Addr().String())
	err = srv.Serve(ctx, ln, c.drain)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// parseServeFlags declares serve's flags and parses the command line and
// the environment.
func parseServeFlags(args []string, env Env) (*serveConfig, error) {
	c := &serveConfig{}
	fs := newFlagSet("serve", "serve [flags]", env)
	fs.StringVar(&c.listen, "listen", "localhost:8080", "address to listen on, HOST:PORT")
	fs.StringVar(&c.publishToken, "publish-token", "", "shared token accepted on POST /v1/publish (prefer the environment variable or --publish-token-file)")
	fs.StringVar(&c.publishTokFile, "publish-token-file", "", "file holding the shared publish token")
	fs.StringVar(&c.redis, "redis", "", "Redis URL (redis://, rediss://, redis-sentinel://h1:p1,h2:p2/master, redis-cluster://h1:p1,h2:p2); empty runs the embedded bus")
	fs.StringVar(&c.data, "data", "", "directory where the embedded bus keeps its history and ref state (default: the user's state directory)")
	fs.IntVar(&c.partitions, "partitions", bus.DefaultPartitions, "partitions repos are spread over; the same for every node and hook of a deployment")
	fs.IntVar(&c.history, "history", bus.DefaultHistory, "events kept per partition for resume")
	fs.DurationVar(&c.historyAge, "history-age", 0, "also trim events older than this (0: by count only)")
	fs.StringVar(&c.spool, "spool", "", "hook spool directory to drain (pushes a hook could not publish)")
	fs.StringVar(&c.queue, "queue", "", "hook queue directory to publish from into this node's bus, as 'refcast hook drain --queue' does (install-hook --queue DIR)")
	fs.StringVar(&c.authSecretFile, "auth-secret-file", "", "HS256 secret file: turns token authorization on")
	fs.StringVar(&c.authJWKS, "auth-jwks", "", "JWKS file or URL with public keys (RS256/ES256/EdDSA): turns token authorization on")
	fs.StringVar(&c.authIssuer, "auth-issuer", "", "refuse tokens whose iss claim is not this (with a shared identity provider; refcast token --issuer)")
	fs.StringVar(&c.authAudience, "auth-audience", "", "refuse tokens whose aud claim does not include this (set it with a shared identity provider; refcast token --audience)")
	fs.Var(&c.public, "public", "repo glob readable without a token (repeatable)")
	fs.IntVar(&c.maxConnections, "max-connections", server.DefaultMaxConnections, "streams and long-polls per node; beyond it 503 with Retry-After")
	fs.Int64Var(&c.maxQueuedBytes, "max-queued-bytes", server.DefaultMaxQueuedBytes, "bytes all streams may hold in queued, unwritten events on this node; beyond it streams are closed, those not reading first (they resume from their cursor); readers whose backlog other streams share only beyond twice it")
	fs.IntVar(&c.maxPerClient, "max-per-client", 0, fmt.Sprintf("streams and long-polls per client IP (IPv6: /64), for every client; when not set, %d for clients without a token and unlimited with one; 0: unlimited for everyone", server.DefaultMaxPerAnonymous))
	fs.Float64Var(&c.publishRate, "publish-rate", server.DefaultPublishRate, "POST /v1/publish requests per second per client IP (IPv6: /64), beyond the burst 429; negative: unlimited (behind a load balancer, set --trusted-proxy)")
	fs.IntVar(&c.publishBurst, "publish-burst", server.DefaultPublishBurst, "publish requests a client may make at once before --publish-rate applies")
	fs.Float64Var(&c.snapshotRate, "snapshot-rate", server.DefaultSnapshotRate, "GET /v1/refs requests per second per client IP (IPv6: /64), a long-poll counting once; negative: unlimited")
	fs.IntVar(&c.snapshotBurst, "snapshot-burst", server.DefaultSnapshotBurst, "snapshot requests a client may make at once before --snapshot-rate applies")
	fs.DurationVar(&c.heartbeat, "heartbeat", server.DefaultHeartbeat, "heartbeat interval on idle streams")
	fs.DurationVar(&c.batchDelay, "batch-delay", server.DefaultBatchDelay, "a stream written less than this ago gets its next events together when it has passed (fewer writes under a high event rate; a stream that was quiet is written at once); 0: write every event at once")
	fs.DurationVar(&c.retry, "retry", server.DefaultRetry, "base reconnect delay sent as retry: (jittered up to twice)")
	fs.DurationVar(&c.drain, "drain", server.DefaultDrain, "on shutdown, spread closing streams over this window")
	fs.DurationVar(&c.maxWait, "max-wait", server.DefaultMaxWait, "longest wait= a long-poll may ask for")
	fs.Var(&c.trustedProxies, "trusted-proxy", "CIDR of a load balancer whose X-Forwarded-For names the client for per-client limits (repeatable)")
	fs.Var(&c.corsOrigins, "cors-origin", "origin allowed to read from a browser, or * (repeatable)")
	fs.StringVar(&c.commitURL, "commit-url", "", "dashboard link template for commits, e.g. https://git.example.com/{repo}/commit/{sha}")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&c.accessLog, "access-log", false, "log one info line per request (method, path, query without tokens, status, duration, bytes, remote, sub); 401 and 403 are logged anyway")
	fs.StringVar(&c.debugAddr, "debug-addr", "", "serve net/http/pprof on this separate HOST:PORT, never on --listen (keep it on loopback); empty: off")
	fs.StringVar(&c.gitUpstream, "git-upstream", "", "git server that /git/ proxies fetches to: an absolute path template run as git upload-pack (/srv/git/{repo}.git) or an http(s) URL template (https://git.example.com/{repo}.git); empty: /git/ serves ref discovery only")
	fs.Var(&c.gitFeatures, "git-upstream-feature", "an optional capability the --git-upstream's upload-pack is configured for, advertised to git clients: filter (uploadpack.allowFilter: partial clones), allow-tip-sha1-in-want, allow-reachable-sha1-in-want, ref-in-want, sideband-all, wait-for-done (repeatable)")
	fs.StringVar(&c.webhookSecretFile, "webhook-secret-file", "", "file of forge webhook secrets: one SECRET, or lines REPO_GLOB SECRET; turns on POST /v1/hooks/{github,gitlab,gitea,bitbucket} (docs/webhooks.md)")
	fs.BoolVar(&c.webhookLowercase, "webhook-lowercase", false, "lower-case the repo names forges send (Acme/App becomes acme/app)")
	fs.StringVar(&c.webhookRepoPrefix, "webhook-repo-prefix", "", "put this before the repo names forges send, e.g. github.com/")
	if err := parseFlags(fs, args, env); err != nil {
		return nil, err
	}
	fs.Visit(func(f *flag.Flag) { c.maxPerClientSet = c.maxPerClientSet || f.Name == "max-per-client" })
	if c.maxPerClient < 0 {
		return nil, usageError{msg: fmt.Sprintf("--max-per-client: %d is negative; give a number of streams, or 0 for no limit", c.maxPerClient)}
	}
	if c.maxQueuedBytes <= 0 {
		return nil, usageError{msg: fmt.Sprintf("--max-queued-bytes: %d is not positive; give a number of bytes, like %d (the default)", c.maxQueuedBytes, server.DefaultMaxQueuedBytes)}
	}
	if fs.NArg() > 0 {
		return nil, usageError{msg: fmt.Sprintf("serve: unexpected argument %q\n%s", fs.Arg(0), fs.pointer())}
	}
	if c.gitUpstream != "" {
		if err := gitfront.ValidateUpstream(c.gitUpstream); err != nil {
			return nil, usageError{msg: "serve: --git-upstream: " + err.Error()}
		}
	}
	for _, f := range c.gitFeatures {
		if _, ok := gitfront.Features[f]; !ok {
			return nil, usageError{msg: fmt.Sprintf("serve: --git-upstream-feature %q: not a feature refcast knows; give one of filter, allow-tip-sha1-in-want, allow-reachable-sha1-in-want, ref-in-want, sideband-all, wait-for-done\n%s", f, fs.pointer())}
		}
	}
	if len(c.gitFeatures) > 0 && c.gitUpstream == "" {
		return nil, usageError{msg: "serve: --git-upstream-feature needs --git-upstream: without an upstream refcast serves no fetch to advertise it for\n" + fs.pointer()}
	}
	if c.data == "" && c.redis == "" {
		c.data = defaultDataDir(env)
	}
	return c, nil
}

// readPublishToken reads --publish-token-file, when given, into
// publishToken.
func (c *serveConfig) readPublishToken() error {
	if c.publishTokFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.publishTokFile)
	if err != nil {
		return fmt.Errorf("read publish token: %w", err)
	}
	c.publishToken = strings.TrimSpace(string(b))
	return nil
}

// trustedPrefixes parses --trusted-proxy: CIDRs, or single addresses.
func (c *serveConfig) trustedPrefixes() ([]netip.Prefix, error) {
	var trusted []netip.Prefix
	for _, cidr := range c.trustedProxies {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			a, aerr := netip.ParseAddr(cidr)
			if aerr != nil {
				return nil, usageError{msg: fmt.Sprintf("--trusted-proxy: %q is not an address or CIDR; use e.g. 10.0.0.0/8 or 10.0.0.5", cidr)}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		trusted = append(trusted, p.Masked())
	}
	return trusted, nil
}

// serverOptions maps the configuration onto the node's options; auth,
// public repos and the dashboard are added by wireServeExtras.
func (c *serveConfig) serverOptions(b bus.Bus, log *slog.Logger, trusted []netip.Prefix) server.Options {
	opts := server.Options{
		Registry:       prometheus.NewRegistry(),
		Version:        version,
		Bus:            b,
		Logger:         log,
		PublishToken:   c.publishToken,
		MaxConnections: c.maxConnections,
		MaxQueuedBytes: c.maxQueuedBytes,
		MaxPerClient:   c.maxPerClient,
		PublishRate:    c.publishRate,
		PublishBurst:   c.publishBurst,
		SnapshotRate:   c.snapshotRate,
		SnapshotBurst:  c.snapshotBurst,
		Heartbeat:      c.heartbeat,
		BatchDelay:     batchDelayOption(c.batchDelay),
		Retry:          c.retry,
		MaxWait:        c.maxWait,
		CORSOrigins:    c.corsOrigins,
		TrustedProxies: trusted,
		AccessLog:      c.accessLog,
		Git:            server.GitOptions{Upstream: c.gitUpstream, Agent: "refcast/" + version, Features: c.gitFeatures},
	}
	if c.maxPerClientSet {
		// An explicit --max-per-client applies to everyone, 0 meaning no
		// limit at all; without it, anonymous clients get the default.
		opts.MaxPerAnonymous = -1
	}
	if hc, ok := b.(bus.HealthChecker); ok {
		opts.Readiness = hc.Ping
	}
	return opts
}

// logServeStart says where the node listens and warns about settings that
// leave it open or unable to take pushes.
func logServeStart(log *slog.Logger, c *serveConfig, opts *server.Options, addr string) {
	log.Info("refcast serving", "addr", addr, "bus", busName(c), "version", version)
	if opts.Auth == nil {
		log.Warn("AUTHORIZATION IS OFF: every repo's refs are readable by anyone who can reach this node; set --auth-secret-file or --auth-jwks")
	}
	if opts.Webhooks != nil {
		log.Info("forge webhooks on", "path", "/v1/hooks/{github,gitlab,gitea,bitbucket}", "secrets", opts.Webhooks.Secrets.Len())
	}
	if c.publishToken == "" && opts.Auth == nil {
		log.Warn("publishing over HTTP is disabled: set --publish-token (or auth) so hooks can publish to this node")
	}
}

func busName(c *serveConfig) string {
	if c.redis != "" {
		return "redis"
	}
	return "embedded"
}

// openServeBus picks the bus from configuration: Redis when --redis is
// set, else the embedded one.
func openServeBus(ctx context.Context, c *serveConfig, log *slog.Logger) (bus.Bus, func(), error) {
	switch {
	case c.redis != "":
		return openRedisBus(ctx, c, log)
	default:
		return openEmbeddedBus(c, log)
	}
}

// defaultDataDir is where the embedded bus keeps its state when --data is
// not given: the user's state directory.
func defaultDataDir(env Env) string {
	if d := env.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "refcast")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "refcast")
	}
	return filepath.Join(os.TempDir(), "refcast")
}

// spoolDepth reports how many pushes wait in the spool a node drains.
func spoolDepth(dir string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "refcast_hook_spool_depth",
		Help: "Pushes waiting in the drained hook spool (--spool).",
	}, func() float64 {
		sp, err := hook.OpenSpool(dir, nil)
		if err != nil {
			return -1
		}
		files, err := sp.Pending()
		if err != nil {
			return -1
		}
		return float64(len(files))
	})
}

// startQueueDrain publishes the hook queue in dir into the node's own bus
// (no HTTP round trip, no token) until ctx ends, on a goroutine drainers
// waits for. The queue is opened (checked and locked) here: one that is
// missing, writable by others or drained by another process is refused at
// start, not found out when pushes go missing.
func startQueueDrain(ctx context.Context, dir string, b bus.Bus, env Env, drainers *sync.WaitGroup, log *slog.Logger) error {
	q, err := hook.OpenQueue(dir)
	if err != nil {
		return usageError{msg: fmt.Sprintf("serve: --queue %s: %v (create it with mkdir -m 0700, owned by the user git runs hooks as, and give it to 'refcast install-hook --queue')", dir, err)}
	}
	r := &hook.Runner{Getenv: env.Getenv, Publisher: hook.BusPublisher{Bus: b}}
	drainers.Go(func() {
		defer q.Close()
		if err := r.Drain(ctx, q, hook.DrainOptions{Log: log}); err != nil {
			log.Error("hook queue not drained", slog.String("queue", dir), slog.Any("error", err))
		}
	})
	return nil
}

// queueDepth reports how many pushes wait in the queue a node drains.
func queueDepth(dir string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "refcast_hook_queue_depth",
		Help: "Pushes waiting in the drained hook queue (--queue), finished or still being written.",
	}, func() float64 {
		n, err := hook.QueueDepth(dir)
		if err != nil {
			return -1
		}
		return float64(n)
	})
}

// batchDelayOption maps --batch-delay to server.Options.BatchDelay, where 0
// means the default: 0 on the command line turns batching off.
func batchDelayOption(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
