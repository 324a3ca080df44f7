package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/refcast/refcast/wire"
)

// config is everything the coordinator is told.
type config struct {
	target     string
	url        string // -url: one base URL or several, comma-separated
	token      string
	pid        string // -pid: one per -url entry, comma-separated
	pprof      string // -pprof: one per -url entry, comma-separated
	redisPid   string // -redis-pid: any number, comma-separated
	nodes      []node // parsed from url, pid and pprof
	redis      []int  // parsed from redisPid
	label      string
	conns      int
	perWorker  int
	addrBase   int
	scenarios  string
	events     int
	interval   time.Duration
	repos      int
	spreadN    int
	spreadRate float64
	rateConns  int
	rateRepos  int
	rateDur    time.Duration
	publishers int
	rateTries  int
	rateStart  float64 // first trial's pace; 0: unpaced
	settle     time.Duration
	connConc   int
	cursor     bool
	timeout    time.Duration
}

func runCoordinator(ctx context.Context, args []string, out io.Writer) error {
	var c config
	fs := flag.NewFlagSet("refcast-bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: refcast-bench [flags]            measure a refcast node or nginx+nchan
       refcast-bench report < results   tables from RESULT lines

Several nodes (-url URL1,URL2,URL3) must share a bus: stream i is opened
on URL i mod N, events are published to the first URL only, and figures
are printed per node and for all of them; -pid and -pprof then take one
entry per URL in the same order, and -redis-pid the Redis server(s)
(all masters of a cluster) whose CPU per published event is reported.

Scenarios (-scenarios, comma-separated, each with its own connections):
  fanout  -conns subscribers on one repo: idle memory per connection, then
          -events events one every -interval: CPU per delivery and the time
          for each event to reach every subscriber (p50/p99/max)
  spread  -conns subscribers over -repos repos, -spread-events events
          round-robin over the repos at -spread-rate/s: the cost of filtering
  rate    -rate-conns subscribers over -rate-repos repos (default one),
          events round-robin over those repos by -publishers concurrent
          publishers unpaced for -rate-duration; if anything is lost, paced
          retries at 80% of the lower of the achieved rate and the events
          fully delivered per second (-rate-tries in all)

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.target, "target", "refcast", "server kind: refcast or nchan")
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "server base URL (http://127.x.x.x:port), or several comma-separated nodes sharing a bus: streams spread evenly, events published to the first")
	fs.StringVar(&c.token, "token", os.Getenv("REFCAST_PUBLISH_TOKEN"), "refcast publish token (default $REFCAST_PUBLISH_TOKEN)")
	fs.StringVar(&c.pid, "pid", "", "server process id, one per -url entry (comma-separated): RSS and CPU are read from /proc for each and its children (empty or 0: no resource figures)")
	fs.StringVar(&c.pprof, "pprof", "", "pprof base URL of a node started with refcast serve --debug-addr, one per -url entry (comma-separated), to count goroutines")
	fs.StringVar(&c.redisPid, "redis-pid", "", "redis-server process id(s), comma-separated (every master of a cluster): their CPU per published event is reported")
	fs.StringVar(&c.label, "label", "", "label copied into RESULT lines (e.g. the round)")
	fs.IntVar(&c.conns, "conns", 1000, "subscribers for fanout and spread")
	fs.IntVar(&c.perWorker, "per-worker", 5000, "connections per worker process (each process may hold at most 20,000 files)")
	fs.IntVar(&c.addrBase, "addr-base", 2, "worker i dials from 127.0.0.(addr-base+i)")
	fs.StringVar(&c.scenarios, "scenarios", "fanout,spread,rate", "scenarios to run, in order")
	fs.IntVar(&c.events, "events", 20, "fanout: events published")
	fs.DurationVar(&c.interval, "interval", 750*time.Millisecond, "fanout: time between events")
	fs.IntVar(&c.repos, "repos", 1000, "spread: repos the subscribers are spread over")
	fs.IntVar(&c.spreadN, "spread-events", 2000, "spread: events published")
	fs.Float64Var(&c.spreadRate, "spread-rate", 200, "spread: events per second")
	fs.IntVar(&c.rateConns, "rate-conns", 1000, "rate: subscribers")
	fs.IntVar(&c.rateRepos, "rate-repos", 1, "rate: repos the subscribers are spread over and the events go round-robin to")
	fs.DurationVar(&c.rateDur, "rate-duration", 10*time.Second, "rate: length of each trial")
	fs.IntVar(&c.publishers, "publishers", 8, "rate: concurrent publishers")
	fs.IntVar(&c.rateTries, "rate-tries", 3, "rate: trials at most")
	fs.Float64Var(&c.rateStart, "rate-start", 0, "rate: events per second of the first trial; 0, unpaced (at 54,000 streams on one repo an unpaced trial leaves a backlog of hours)")
	fs.DurationVar(&c.settle, "settle", 3*time.Second, "wait after connecting before sampling memory")
	fs.IntVar(&c.connConc, "connect-concurrency", 64, "connection attempts in flight per worker")
	fs.BoolVar(&c.cursor, "cursor", true, "refcast: subscribe with since=<a current cursor>, as a resuming client does")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	var t target
	switch c.target {
	case "refcast":
		if c.token == "" {
			return fmt.Errorf("refcast needs a publish token: -token or $REFCAST_PUBLISH_TOKEN")
		}
		t = &refcastTarget{base: c.nodes[0].url, token: c.token}
	case "nchan":
		t = &nchanTarget{base: c.nodes[0].url}
	default:
		return fmt.Errorf("-target must be refcast or nchan, got %q", c.target)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	b := &bench{cfg: &c, t: t, pub: newPublishClient(max(8, c.publishers)), out: out}
	if _, ok := t.(*refcastTarget); ok {
		if err := b.waitReady(ctx, 15*time.Second); err != nil {
			return err
		}
	}
	for _, sc := range strings.Split(c.scenarios, ",") {
		var r *result
		var err error
		switch strings.TrimSpace(sc) {
		case "fanout":
			r, err = b.fanout(ctx)
		case "spread":
			r, err = b.spread(ctx)
		case "rate":
			r, err = b.rate(ctx)
		case "":
			continue
		default:
			return fmt.Errorf("unknown scenario %q", sc)
		}
		if r != nil {
			if len(c.nodes) == 1 { // one node: the aggregate is the node
				r.Nodes = nil
				for i := range r.Trials {
					r.Trials[i].Nodes = nil
				}
			}
			line, _ := json.Marshal(r)
			fmt.Fprintf(b.out, "RESULT %s\n", line)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", sc, err)
		}
	}
	return nil
}

// check parses the lists and checks the bounds of c.
func (c *config) check() error {
	var err error
	if c.nodes, err = parseNodes(c.url, c.pid, c.pprof); err != nil {
		return err
	}
	if c.redis, err = parseIDs("-redis-pid", c.redisPid); err != nil {
		return err
	}
	if c.perWorker < 1 || c.perWorker > 19000 {
		return fmt.Errorf("-per-worker must be 1..19000 (a process may hold at most 20,000 files)")
	}
	// Every event has a slot per node in every worker (maxRateEvents);
	// fanout adds one for its warm-up event.
	if c.events < 1 || c.events >= maxRateEvents {
		return fmt.Errorf("-events must be 1..%d", maxRateEvents-1)
	}
	if c.spreadN < 1 || c.spreadN > maxRateEvents {
		return fmt.Errorf("-spread-events must be 1..%d", maxRateEvents)
	}
	if c.repos < 1 || c.rateRepos < 1 {
		return fmt.Errorf("-repos and -rate-repos must be at least 1")
	}
	if !(c.rateStart >= 0) || math.IsInf(c.rateStart, 0) {
		return fmt.Errorf("-rate-start must be 0 (unpaced) or a positive number of events per second, got %v", c.rateStart)
	}
	return nil
}

// checkLoopback refuses any server that is not on 127.0.0.0/8.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		return fmt.Errorf("-url must name a 127.x.x.x address, got %q", u.Host)
	}
	return nil
}

// result is one scenario's figures; printed as a RESULT line of JSON. The
// top-level figures are for all nodes together; with several nodes, Nodes
// has each one's (for rate: only its streams and memory; each trial has
// its own per-node figures).
type result struct {
	Label    string `json:"label,omitempty"`
	Target   string `json:"target"`
	Scenario string `json:"scenario"`
	Conns    int    `json:"conns"`
	Open     int    `json:"open"`
	Workers  int    `json:"workers"`
	Repos    int    `json:"repos,omitempty"`

	ConnectSec  float64  `json:"connect_s"`
	RSSBeforeKB int64    `json:"rss_before_kb,omitempty"`
	RSSAfterKB  int64    `json:"rss_after_kb,omitempty"`
	RSSPerConn  float64  `json:"rss_per_conn_b,omitempty"`
	PSSPerConn  float64  `json:"pss_per_conn_b,omitempty"`
	GoroutinesB int      `json:"goroutines_before,omitempty"`
	GoroutinesA int      `json:"goroutines_after,omitempty"`
	IdleCPUPerS float64  `json:"idle_cpu_ms_per_s,omitempty"`
	RSSEventsKB int64    `json:"rss_after_events_kb,omitempty"` // after the publish phase: what streams keep once they have written
	Events      int      `json:"events,omitempty"`
	Delivered   int64    `json:"delivered"`
	Expected    int64    `json:"expected"`
	CPUSec      float64  `json:"cpu_s,omitempty"`
	CPUPerDeliv float64  `json:"cpu_us_per_delivery,omitempty"`
	CPUPerEvent float64  `json:"cpu_us_per_event,omitempty"`
	P50Ms       float64  `json:"p50_ms"`
	P99Ms       float64  `json:"p99_ms"`
	MaxMs       float64  `json:"max_ms"`
	Rate        float64  `json:"rate_per_s,omitempty"` // rate: highest sustained with nothing lost (0: none)
	Trials      []trial  `json:"trials,omitempty"`
	PublishErrs int      `json:"publish_errors"`
	Dropped     int      `json:"dropped"`
	FailedConns int      `json:"failed_conns"`
	Incomplete  int      `json:"incomplete_events"`
	FirstErrors []string `json:"errors,omitempty"`

	// RedisCPUSec is the CPU time of the -redis-pid processes over the
	// publish phase; RedisCPUPerEvent divides it by the events published,
	// so it includes what Redis spends idle over the phase (cluster
	// gossip, AOF fsync every second, cron): RedisIdleCPUPerS, measured
	// over the idle second after connecting, says how much.
	RedisCPUSec      float64      `json:"redis_cpu_s,omitempty"`
	RedisCPUPerEvent float64      `json:"redis_cpu_us_per_event,omitempty"`
	RedisIdleCPUPerS float64      `json:"redis_idle_cpu_ms_per_s,omitempty"`
	Nodes            []nodeResult `json:"nodes,omitempty"`
}

// nodeResult is one node's figures: its own streams, deliveries and
// process. Reach-all times are to the last of its streams.
type nodeResult struct {
	URL         string  `json:"url"`
	Open        int     `json:"open"`
	FailedConns int     `json:"failed_conns"`
	RSSBeforeKB int64   `json:"rss_before_kb,omitempty"`
	RSSAfterKB  int64   `json:"rss_after_kb,omitempty"`
	RSSPerConn  float64 `json:"rss_per_conn_b,omitempty"`
	PSSPerConn  float64 `json:"pss_per_conn_b,omitempty"`
	GoroutinesB int     `json:"goroutines_before,omitempty"`
	GoroutinesA int     `json:"goroutines_after,omitempty"`
	IdleCPUPerS float64 `json:"idle_cpu_ms_per_s,omitempty"`
	Delivered   int64   `json:"delivered"`
	Expected    int64   `json:"expected"`
	Dropped     int     `json:"dropped"`
	Incomplete  int     `json:"incomplete_events"`
	CPUSec      float64 `json:"cpu_s,omitempty"`
	CPUPerDeliv float64 `json:"cpu_us_per_delivery,omitempty"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
}

// trial is one rate attempt.
type trial struct {
	Paced      float64      `json:"paced_per_s"` // 0: unpaced
	Published  int64        `json:"published"`
	Achieved   float64      `json:"achieved_per_s"`
	Delivered  int64        `json:"delivered"`
	Expected   int64        `json:"expected"`
	Dropped    int          `json:"dropped"`
	Errors     int          `json:"publish_errors"`
	CPUPerDel  float64      `json:"cpu_us_per_delivery,omitempty"`
	P50Ms      float64      `json:"p50_ms"`
	P99Ms      float64      `json:"p99_ms"`
	Sustained  bool         `json:"sustained"`
	RedisCPU   float64      `json:"redis_cpu_us_per_event,omitempty"`
	Nodes      []nodeResult `json:"nodes,omitempty"`
	Incomplete int          `json:"incomplete_events,omitempty"`
}

type bench struct {
	cfg *config
	t   target
	pub *http.Client
	out io.Writer
	run int // run ids, so a late event of a previous phase never counts
	// connected: a scenario has opened streams on these servers before,
	// so their memory no longer starts from a fresh process.
	connected bool
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, format+"\n", args...)
}

// sample reads /proc for every node given a -pid and for the -redis-pid
// processes.
func (b *bench) sample() usage {
	nodes := b.cfg.nodes
	u := usage{nodes: make([]procSample, len(nodes)), ok: make([]bool, len(nodes))}
	for k, n := range nodes {
		if n.pid == 0 {
			continue
		}
		s, err := sampleTree(n.pid)
		if err != nil {
			b.logf("  warning: cannot read /proc/%d (%s): %v", n.pid, n.url, err)
			continue
		}
		u.nodes[k], u.ok[k] = s, true
	}
	u.redisOK = len(b.cfg.redis) > 0
	for _, pid := range b.cfg.redis {
		s, err := sampleTree(pid)
		if err != nil {
			b.logf("  warning: cannot read /proc/%d (redis): %v", pid, err)
			u.redisOK = false
			break
		}
		u.redis.pids += s.pids
		u.redis.rssKB += s.rssKB
		u.redis.cpu += s.cpu
	}
	return u
}

// session is one scenario's workers with their streams open.
type session struct {
	p     pool
	plan  plan
	repos int
	open  []int // per node; set by connect, refreshed by each rate trial
	total int   // streams open on all nodes
}

// hosts are the nodes' host:port, in -url order.
func (b *bench) hosts() []string {
	out := make([]string, len(b.cfg.nodes))
	for k, n := range b.cfg.nodes {
		out[k] = n.host
	}
	return out
}

// connectCmd asks worker w to open (or reopen) its streams.
func (b *bench) connectCmd(w *workerProc, cursor string, repos int) workerCmd {
	prefix, suffix := b.t.subscribePath(cursor)
	return workerCmd{Op: "connect", Connect: &connectSpec{
		Servers: b.hosts(), LocalIP: w.ip, Prefix: prefix, Suffix: suffix,
		RepoFmt: b.t.repoFmt(), Repos: repos, Start: w.start, Count: w.count,
		Concurrency: b.cfg.connConc, Timeout: 15 * time.Second,
	}}
}

// connect starts workers, opens conns streams spread over repos and the
// nodes, waits for settle, and fills the connection and memory figures of
// res and its nodes.
func (b *bench) connect(ctx context.Context, res *result, conns, repos int) (*session, error) {
	c := b.cfg
	cursor := ""
	if _, ok := b.t.(*refcastTarget); ok && c.cursor {
		cur, err := b.currentCursor(ctx)
		if err != nil {
			return nil, fmt.Errorf("read a cursor: %w", err)
		}
		cursor = cur
	}
	s := &session{plan: newPlan(conns, repos, len(c.nodes)), repos: max(1, repos)}
	res.Nodes = make([]nodeResult, len(c.nodes))
	for k, n := range c.nodes {
		res.Nodes[k].URL = n.url
	}
	u0 := b.sample()
	b.countGoroutines(ctx, res, func(n *nodeResult) *int { return &n.GoroutinesB }, &res.GoroutinesB)
	p, err := startPool(ctx, conns, c.perWorker, c.addrBase)
	if err != nil {
		return nil, err
	}
	s.p = p
	res.Workers = len(p)
	start := time.Now()
	sts, err := p.each(func(w *workerProc) workerCmd { return b.connectCmd(w, cursor, repos) })
	res.ConnectSec = time.Since(start).Seconds()
	if err != nil {
		p.close()
		return nil, err
	}
	per, errs := merge(sts, len(c.nodes))
	tot := sumNodes(per)
	s.open, s.total = opens(per), tot.Open
	res.Open, res.FailedConns, res.FirstErrors = tot.Open, tot.Failed, errs
	for k := range per {
		res.Nodes[k].Open, res.Nodes[k].FailedConns = per[k].Open, per[k].Failed
	}
	b.logf("  connect: %d/%d streams open in %.1fs from %d workers (%d failed)", tot.Open, conns, res.ConnectSec, len(p), tot.Failed)
	if len(c.nodes) > 1 {
		for k, n := range res.Nodes {
			b.logf("    node %d %s: %d/%d open (%d failed)", k+1, n.URL, n.Open, s.plan.assigned[k], n.FailedConns)
		}
	}
	if tot.Open == 0 {
		p.close()
		return nil, fmt.Errorf("no stream opened: %v", errs)
	}
	if ok := sleepCtx(ctx, c.settle); !ok {
		p.close()
		return nil, ctx.Err()
	}
	first := !b.connected
	b.connected = true
	b.memory(ctx, res, s, u0, first)
	if b.countGoroutines(ctx, res, func(n *nodeResult) *int { return &n.GoroutinesA }, &res.GoroutinesA) {
		b.logf("  goroutines: %d before connecting, %d with %d idle streams", res.GoroutinesB, res.GoroutinesA, tot.Open)
	}
	return s, nil
}

// memory fills the memory and idle-CPU figures of res and its nodes: u0
// was sampled before connecting. Only a server's first connections say what
// a connection costs: later ones reuse memory the earlier ones freed.
func (b *bench) memory(ctx context.Context, res *result, s *session, u0 usage, first bool) {
	u1 := b.sample()
	sampled := false
	for k := range res.Nodes {
		if !u0.ok[k] || !u1.ok[k] {
			continue
		}
		sampled = true
		n := &res.Nodes[k]
		n.RSSBeforeKB, n.RSSAfterKB = u0.nodes[k].rssKB, u1.nodes[k].rssKB
		if first && n.Open > 0 {
			n.RSSPerConn = float64(u1.nodes[k].rssKB-u0.nodes[k].rssKB) * 1024 / float64(n.Open)
			n.PSSPerConn = float64(u1.nodes[k].pssKB-u0.nodes[k].pssKB) * 1024 / float64(n.Open)
		}
	}
	if !sampled {
		return
	}
	a0, ok0 := u0.all()
	a1, ok1 := u1.all()
	if ok0 && ok1 {
		res.RSSBeforeKB, res.RSSAfterKB = a0.rssKB, a1.rssKB
		if first {
			res.RSSPerConn = float64(a1.rssKB-a0.rssKB) * 1024 / float64(s.total)
			res.PSSPerConn = float64(a1.pssKB-a0.pssKB) * 1024 / float64(s.total)
		}
	}
	// idle CPU: one more second of nothing
	if !sleepCtx(ctx, time.Second) {
		return
	}
	u2 := b.sample()
	for k := range res.Nodes {
		if d, ok := cpuDelta(u1, u2, k); ok {
			res.Nodes[k].IdleCPUPerS = float64(d) / float64(time.Millisecond)
		}
	}
	if d, ok := cpuDelta(u1, u2, -1); ok {
		res.IdleCPUPerS = float64(d) / float64(time.Millisecond)
	}
	if u1.redisOK && u2.redisOK {
		res.RedisIdleCPUPerS = float64(u2.redis.cpu-u1.redis.cpu) / float64(time.Millisecond)
		b.logf("    redis (%d process(es)): idle CPU %.0f ms/s", len(b.cfg.redis), res.RedisIdleCPUPerS)
	}
	if ok0 && ok1 {
		b.logf("  memory: server RSS %.1f MiB -> %.1f MiB over %d idle streams: %.0f B/conn (PSS %.0f B/conn; per-connection figures are 0 unless these are the server's first streams); idle CPU %.0f ms/s",
			float64(a0.rssKB)/1024, float64(a1.rssKB)/1024, s.total, res.RSSPerConn, res.PSSPerConn, res.IdleCPUPerS)
	}
	if len(res.Nodes) > 1 {
		for k, n := range res.Nodes {
			b.logf("    node %d: RSS %.1f MiB -> %.1f MiB, %.0f B/conn, idle CPU %.0f ms/s", k+1,
				float64(n.RSSBeforeKB)/1024, float64(n.RSSAfterKB)/1024, n.RSSPerConn, n.IdleCPUPerS)
		}
	}
}

// countGoroutines reads the goroutine count of every node given a -pprof
// into field(node) and their sum into all; it reports whether any was.
func (b *bench) countGoroutines(ctx context.Context, res *result, field func(*nodeResult) *int, all *int) bool {
	sampled := false
	for k, n := range b.cfg.nodes {
		if n.pprof == "" {
			continue
		}
		g, err := goroutines(ctx, n.pprof)
		if err != nil {
			b.logf("  warning: goroutines of %s: %v", n.url, err)
			continue
		}
		*field(&res.Nodes[k]) = g
		*all += g
		sampled = true
	}
	return sampled
}

// waitReady polls every node's /readyz until it answers 200 or d passes.
func (b *bench) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, n := range b.cfg.nodes {
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.url+wire.PathReady, nil)
			if err != nil {
				return err
			}
			resp, err := b.pub.Do(req)
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = errors.New(resp.Status)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s not ready after %v: %w", n.url, d, err)
			}
			if !sleepCtx(ctx, 100*time.Millisecond) {
				return ctx.Err()
			}
		}
	}
	return nil
}

// currentCursor opens one stream on the first node and reads the cursor of
// its hello; nodes sharing a bus accept each other's cursors.
func (b *bench) currentCursor(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.cfg.nodes[0].url+wire.PathEvents+"?"+wire.ParamRepo+"=bench/cursor", nil)
	if err != nil {
		return "", err
	}
	resp, err := b.pub.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", wire.PathEvents, resp.Status)
	}
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 1024)
	for len(buf) < cap(buf) {
		n, err := resp.Body.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if i := strings.Index(string(buf), "event: "+wire.EventHello+"\n"); i >= 0 {
			// the id line precedes the event line
			for _, line := range strings.Split(string(buf), "\n") {
				if id, ok := strings.CutPrefix(line, "id: "); ok {
					return id, nil
				}
			}
		}
		if err != nil {
			return "", err
		}
	}
	return "", errors.New("no hello frame")
}

// reset starts a new run in every worker with events per-event slots per
// node.
func (b *bench) reset(s *session, events int) (int, error) {
	b.run++
	_, err := s.p.each(func(*workerProc) workerCmd {
		return workerCmd{Op: "reset", Run: b.run, Events: events, Nodes: len(b.cfg.nodes)}
	})
	return b.run, err
}

// stats merges the workers' figures per node; with detail, per event for
// events [0, upto).
func (b *bench) stats(s *session, detail bool, upto int) ([]nodeStats, []string, error) {
	sts, err := s.p.each(func(*workerProc) workerCmd { return workerCmd{Op: "stats", Detail: detail, Upto: upto} })
	if err != nil {
		return nil, nil, err
	}
	per, errs := merge(sts, len(b.cfg.nodes))
	return per, errs, nil
}

// waitReceived polls the workers until they hold want events or the
// deadline passes; it returns the last figures per node.
func (b *bench) waitReceived(ctx context.Context, s *session, want int64, d time.Duration) ([]nodeStats, error) {
	deadline := time.Now().Add(d)
	for {
		per, _, err := b.stats(s, false, 0)
		if err != nil {
			return nil, err
		}
		if sumNodes(per).Received >= want || time.Now().After(deadline) || ctx.Err() != nil {
			return per, ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bench) publish(ctx context.Context, repoIdx, run, seq int) error {
	repo := fmt.Sprintf(b.t.repoFmt(), repoIdx)
	return b.t.publish(ctx, b.pub, repo, run, seq, time.Now())
}

// figures fills the per-node delivery, latency and CPU figures of nodes
// from the tally t, the per-node streams dropped in the window (dropped)
// and the samples around it.
func figures(nodes []nodeResult, t tally, dropped []int, u0, u1 usage) {
	for k := range nodes {
		n := &nodes[k]
		n.Delivered, n.Expected, n.Incomplete, n.Dropped = t.delivered[k], t.expected[k], t.incomplete[k], dropped[k]
		n.P50Ms, n.P99Ms, n.MaxMs = latencyMs(t.lat[k])
		if d, ok := cpuDelta(u0, u1, k); ok {
			n.CPUSec = d.Seconds()
			if n.Delivered > 0 {
				n.CPUPerDeliv = n.CPUSec * 1e6 / float64(n.Delivered)
			}
		}
	}
}

// redisPerEvent is the -redis-pid processes' CPU between two samples, in
// seconds and in µs per published event.
func redisPerEvent(u0, u1 usage, events int) (sec, perEvent float64) {
	if !u0.redisOK || !u1.redisOK {
		return 0, 0
	}
	sec = (u1.redis.cpu - u0.redis.cpu).Seconds()
	if events > 0 {
		perEvent = sec * 1e6 / float64(events)
	}
	return sec, perEvent
}

// droppedOf is the per-node streams dropped, less those dropped before.
func droppedOf(per []nodeStats, before []int) []int {
	out := make([]int, len(per))
	for k, n := range per {
		out[k] = n.Dropped
		if before != nil {
			out[k] -= before[k]
		}
	}
	return out
}

// logNodes prints one line per node when there are several.
func (b *bench) logNodes(nodes []nodeResult) {
	if len(nodes) < 2 {
		return
	}
	for k, n := range nodes {
		b.logf("    node %d %s: delivered %d/%d (%d events incomplete, %d dropped); CPU %.2fs = %.2f µs/delivery; reach-all p50 %.1fms p99 %.1fms max %.1fms",
			k+1, n.URL, n.Delivered, n.Expected, n.Incomplete, n.Dropped, n.CPUSec, n.CPUPerDeliv, n.P50Ms, n.P99Ms, n.MaxMs)
	}
}

// fanout: every subscriber on one repo; events one at a time.
func (b *bench) fanout(ctx context.Context) (*result, error) {
	c := b.cfg
	res := &result{Label: c.label, Target: c.target, Scenario: "fanout", Conns: c.conns, Events: c.events}
	b.logf("fanout: %s, %d subscribers on one repo over %d node(s), %d events every %v", c.target, c.conns, len(c.nodes), c.events, c.interval)
	s, err := b.connect(ctx, res, c.conns, 1)
	if err != nil {
		return res, err
	}
	defer s.p.close()
	run, err := b.reset(s, c.events+1)
	if err != nil {
		return res, err
	}
	// Event 0 warms the path up and proves every stream receives.
	if err := b.publish(ctx, 0, run, 0); err != nil {
		return res, fmt.Errorf("warm-up publish: %w", err)
	}
	if per, err := b.waitReceived(ctx, s, int64(s.total), 15*time.Second); err != nil || sumNodes(per).Received < int64(s.total) {
		b.logf("  warning: warm-up event reached %d of %d streams", sumNodes(per).Received, s.total)
	}
	u0 := b.sample()
	failed := make([]bool, c.events+1)
	start := time.Now()
	for seq := 1; seq <= c.events && ctx.Err() == nil; seq++ {
		if err := b.publish(ctx, 0, run, seq); err != nil {
			res.PublishErrs++
			failed[seq] = true
			b.logf("  publish %d: %v", seq, err)
		}
		sleepCtx(ctx, time.Until(start.Add(time.Duration(seq)*c.interval)))
	}
	want := int64(s.total) * int64(c.events+1)
	per, err := b.waitReceived(ctx, s, want, 15*time.Second)
	if err != nil {
		return res, err
	}
	u1 := b.sample()
	detail, _, err := b.stats(s, true, c.events+1)
	if err != nil {
		return res, err
	}
	t := s.plan.tally(detail, 1, c.events+1, s.open, func(int) int { return 0 }, func(seq int) bool { return !failed[seq] })
	res.Dropped = sumNodes(per).Dropped
	res.Delivered, res.Expected, res.Incomplete = t.all.delivered, t.all.expected, t.all.incomplete
	fillLatency(res, t.all.lat)
	published := c.events - res.PublishErrs
	if d, ok := cpuDelta(u0, u1, -1); ok && res.Delivered > 0 {
		res.CPUSec = d.Seconds()
		res.CPUPerDeliv = res.CPUSec * 1e6 / float64(res.Delivered)
		res.CPUPerEvent = res.CPUSec * 1e6 / float64(c.events)
		a1, _ := u1.all()
		res.RSSEventsKB = a1.rssKB
	}
	figures(res.Nodes, t, droppedOf(per, nil), u0, u1)
	res.RedisCPUSec, res.RedisCPUPerEvent = redisPerEvent(u0, u1, published)
	b.logf("  fanout: delivered %d/%d (%d events incomplete, %d streams dropped); server CPU %.2fs = %.2f µs/delivery; reach-all p50 %.1fms p99 %.1fms max %.1fms; RSS after events %.1f MiB",
		res.Delivered, res.Expected, res.Incomplete, res.Dropped, res.CPUSec, res.CPUPerDeliv, res.P50Ms, res.P99Ms, res.MaxMs, float64(res.RSSEventsKB)/1024)
	b.logNodes(res.Nodes)
	b.logRedis(res.RedisCPUSec, res.RedisCPUPerEvent, published)
	return res, nil
}

func (b *bench) logRedis(sec, perEvent float64, events int) {
	if len(b.cfg.redis) > 0 {
		b.logf("    redis (%d process(es)): CPU %.2fs over %d published events = %.1f µs/event", len(b.cfg.redis), sec, events, perEvent)
	}
}

// fillLatency sets p50/p99/max of the per-event reach-all times; an
// incomplete event (-1) counts as infinitely late, reported as -1.
func fillLatency(res *result, lat []time.Duration) {
	res.P50Ms, res.P99Ms, res.MaxMs = latencyMs(lat)
}

func latencyMs(lat []time.Duration) (p50, p99, mx float64) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	l := slices.Clone(lat)
	for i, v := range l {
		if v < 0 {
			l[i] = time.Duration(math.MaxInt64)
		}
	}
	slices.Sort(l)
	pick := func(q float64) float64 {
		v := l[min(len(l)-1, int(math.Ceil(q*float64(len(l))))-1)]
		if v == time.Duration(math.MaxInt64) {
			return -1 // an event that did not reach everyone
		}
		return float64(v) / float64(time.Millisecond)
	}
	return pick(0.50), pick(0.99), pick(1)
}

// spread: subscribers over many repos; each event concerns a few of them.
func (b *bench) spread(ctx context.Context) (*result, error) {
	c := b.cfg
	repos := c.repos
	res := &result{Label: c.label, Target: c.target, Scenario: "spread", Conns: c.conns, Repos: repos, Events: c.spreadN}
	b.logf("spread: %s, %d subscribers over %d repos and %d node(s), %d events at %.0f/s", c.target, c.conns, repos, len(c.nodes), c.spreadN, c.spreadRate)
	s, err := b.connect(ctx, res, c.conns, repos)
	if err != nil {
		return res, err
	}
	defer s.p.close()
	run, err := b.reset(s, c.spreadN)
	if err != nil {
		return res, err
	}
	u0 := b.sample()
	start := time.Now()
	failed := make([]bool, c.spreadN)
	for seq := 0; seq < c.spreadN && ctx.Err() == nil; seq++ {
		if err := b.publish(ctx, seq%repos, run, seq); err != nil {
			res.PublishErrs++
			failed[seq] = true
		}
		sleepCtx(ctx, time.Until(start.Add(time.Duration(float64(seq+1)*float64(time.Second)/c.spreadRate))))
	}
	var want int64
	for seq := range c.spreadN {
		if !failed[seq] {
			want += s.plan.want(seq%repos, s.open)
		}
	}
	per, err := b.waitReceived(ctx, s, want, 15*time.Second)
	if err != nil {
		return res, err
	}
	u1 := b.sample()
	detail, _, err := b.stats(s, true, c.spreadN)
	if err != nil {
		return res, err
	}
	t := s.plan.tally(detail, 0, c.spreadN, s.open, func(seq int) int { return seq % repos }, func(seq int) bool { return !failed[seq] })
	res.Dropped = sumNodes(per).Dropped
	res.Delivered, res.Expected, res.Incomplete = t.all.delivered, t.all.expected, t.all.incomplete
	fillLatency(res, t.all.lat)
	published := c.spreadN - res.PublishErrs
	if d, ok := cpuDelta(u0, u1, -1); ok && res.Delivered > 0 {
		res.CPUSec = d.Seconds()
		res.CPUPerDeliv = res.CPUSec * 1e6 / float64(res.Delivered)
		res.CPUPerEvent = res.CPUSec * 1e6 / float64(c.spreadN)
	}
	figures(res.Nodes, t, droppedOf(per, nil), u0, u1)
	res.RedisCPUSec, res.RedisCPUPerEvent = redisPerEvent(u0, u1, published)
	b.logf("  spread: delivered %d/%d (%d events incomplete, %d dropped); server CPU %.2fs = %.2f µs/delivery, %.0f µs/event; reach-all p50 %.1fms p99 %.1fms max %.1fms",
		res.Delivered, res.Expected, res.Incomplete, res.Dropped, res.CPUSec, res.CPUPerDeliv, res.CPUPerEvent, res.P50Ms, res.P99Ms, res.MaxMs)
	b.logNodes(res.Nodes)
	b.logRedis(res.RedisCPUSec, res.RedisCPUPerEvent, published)
	return res, nil
}

// rate: the highest publish rate sustained for -rate-duration with nothing
// lost, at -rate-conns subscribers over -rate-repos repos.
func (b *bench) rate(ctx context.Context) (*result, error) {
	c := b.cfg
	res := &result{Label: c.label, Target: c.target, Scenario: "rate", Conns: c.rateConns}
	if c.rateRepos > 1 {
		res.Repos = c.rateRepos
	}
	b.logf("rate: %s, %d subscribers over %d repo(s) and %d node(s), %d publishers, %v per trial", c.target, c.rateConns, c.rateRepos, len(c.nodes), c.publishers, c.rateDur)
	s, err := b.connect(ctx, res, c.rateConns, c.rateRepos)
	if err != nil {
		return res, err
	}
	defer s.p.close()
	paced := c.rateStart
	for try := 0; try < c.rateTries && ctx.Err() == nil; try++ {
		if try > 0 { // reopen what the last trial lost
			if _, err := s.p.each(func(w *workerProc) workerCmd { return b.connectCmd(w, "", c.rateRepos) }); err != nil {
				return res, err
			}
			sleepCtx(ctx, time.Second)
		}
		tr, err := b.rateTrial(ctx, s, paced)
		if err != nil {
			return res, err
		}
		res.Trials = append(res.Trials, tr)
		res.Delivered += tr.Delivered
		res.Expected += tr.Expected
		res.Dropped += tr.Dropped
		res.PublishErrs += tr.Errors
		b.logf("  trial %d (%s): published %d = %.1f/s; delivered %d/%d; %d dropped, %d publish errors; %.2f µs/delivery; reach-all p50 %.1fms p99 %.1fms; sustained=%v",
			try+1, pacedName(tr.Paced), tr.Published, tr.Achieved, tr.Delivered, tr.Expected, tr.Dropped, tr.Errors, tr.CPUPerDel, tr.P50Ms, tr.P99Ms, tr.Sustained)
		b.logNodes(tr.Nodes)
		if len(c.redis) > 0 {
			b.logf("    redis (%d process(es)): %.1f µs/event", len(c.redis), tr.RedisCPU)
		}
		if tr.Sustained {
			res.Rate = tr.Achieved
			res.P50Ms, res.P99Ms, res.CPUPerDeliv = tr.P50Ms, tr.P99Ms, tr.CPUPerDel
			res.RedisCPUPerEvent = tr.RedisCPU
			break
		}
		paced = nextPace(tr, c.rateDur)
	}
	b.logf("  rate: highest sustained with nothing lost: %.1f events/s (= %.0f deliveries/s)", res.Rate, res.Rate*float64(s.total)/float64(s.repos))
	return res, nil
}

// nextPace is the rate of the trial after a lossy one: 80 % of the lower
// of what was published and what the streams received per second, counted
// in whole events (delivered ÷ the streams an event reaches). The second
// figure matters when the tier is far slower than the publishers (at
// 54,000 streams on one repo, 80 % of the 551 events/s published was still
// 200 times what 2 cores fan out, and the search found nothing). At least
// one event a second.
func nextPace(tr trial, dur time.Duration) float64 {
	pace := tr.Achieved
	if tr.Published > 0 && tr.Expected > 0 && dur > 0 {
		perEvent := float64(tr.Expected) / float64(tr.Published)
		if got := float64(tr.Delivered) / perEvent / dur.Seconds(); got < pace {
			pace = got
		}
	}
	// 0 would mean unpaced: one event a second is the floor.
	return max(0.8*pace, 1)
}

func pacedName(r float64) string {
	if r == 0 {
		return "unpaced"
	}
	return fmt.Sprintf("paced %.0f/s", r)
}

// maxRateEvents bounds the per-event slots of a rate trial (and of any
// run: a worker holds 16 B per slot and node).
const maxRateEvents = 200000

func (b *bench) rateTrial(ctx context.Context, s *session, paced float64) (trial, error) {
	c := b.cfg
	tr := trial{Paced: paced}
	per0, _, err := b.stats(s, false, 0)
	if err != nil {
		return tr, err
	}
	s.open, s.total = opens(per0), sumNodes(per0).Open
	dropped0 := droppedOf(per0, nil)
	run, err := b.reset(s, maxRateEvents)
	if err != nil {
		return tr, err
	}
	u0 := b.sample()
	var next, published, errs atomic.Int64
	start := time.Now()
	deadline := start.Add(c.rateDur)
	ok2 := make([]atomic.Bool, maxRateEvents)
	var wg sync.WaitGroup
	for range c.publishers {
		wg.Go(func() {
			for ctx.Err() == nil {
				seq := int(next.Add(1) - 1)
				if seq >= maxRateEvents {
					return
				}
				if paced > 0 {
					sleepCtx(ctx, time.Until(start.Add(time.Duration(float64(seq)*float64(time.Second)/paced))))
				}
				if time.Now().After(deadline) {
					return
				}
				if err := b.publish(ctx, seq%s.repos, run, seq); err != nil {
					errs.Add(1)
					continue
				}
				ok2[seq].Store(true)
				published.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	tr.Published, tr.Errors = published.Load(), int(errs.Load())
	tr.Achieved = float64(tr.Published) / elapsed.Seconds()
	n := int(min(int64(maxRateEvents), next.Load()))
	var want int64
	for seq := range n {
		if ok2[seq].Load() {
			want += s.plan.want(seq%s.repos, s.open)
		}
	}
	per, err := b.waitReceived(ctx, s, want, 5*time.Second)
	if err != nil {
		return tr, err
	}
	u1 := b.sample()
	detail, _, err := b.stats(s, true, n)
	if err != nil {
		return tr, err
	}
	t := s.plan.tally(detail, 0, n, s.open, func(seq int) int { return seq % s.repos }, func(seq int) bool { return ok2[seq].Load() })
	dropped := droppedOf(per, dropped0)
	tr.Delivered, tr.Expected, tr.Incomplete = t.all.delivered, t.all.expected, t.all.incomplete
	for _, d := range dropped {
		tr.Dropped += d
	}
	if d, ok := cpuDelta(u0, u1, -1); ok && tr.Delivered > 0 {
		tr.CPUPerDel = d.Seconds() * 1e6 / float64(tr.Delivered)
	}
	tr.P50Ms, tr.P99Ms, _ = latencyMs(t.all.lat)
	tr.Nodes = make([]nodeResult, len(c.nodes))
	for k, nd := range c.nodes {
		tr.Nodes[k].URL, tr.Nodes[k].Open = nd.url, s.open[k]
	}
	figures(tr.Nodes, t, dropped, u0, u1)
	_, tr.RedisCPU = redisPerEvent(u0, u1, int(tr.Published))
	tr.Sustained = tr.Delivered == tr.Expected && tr.Dropped == 0 && tr.Errors == 0 && tr.Published > 0
	return tr, nil
}

// goroutines reads the total from a pprof goroutine profile.
func goroutines(ctx context.Context, base string) (int, error) {
	if err := checkLoopback(base); err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var n int
	_, err = fmt.Fscanf(resp.Body, "goroutine profile: total %d", &n)
	return n, err
}

// sleepCtx sleeps for d or until ctx ends; it reports whether ctx is alive.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
