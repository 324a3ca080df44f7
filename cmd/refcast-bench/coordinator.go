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
	url        string
	token      string
	pid        int
	pprof      string
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
	rateDur    time.Duration
	publishers int
	rateTries  int
	settle     time.Duration
	connConc   int
	cursor     bool
	timeout    time.Duration
}

func runCoordinator(ctx context.Context, args []string) error {
	var c config
	fs := flag.NewFlagSet("refcast-bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: refcast-bench [flags]            measure a refcast node or nginx+nchan
       refcast-bench report < results   tables from RESULT lines

Scenarios (-scenarios, comma-separated, each with its own connections):
  fanout  -conns subscribers on one repo: idle memory per connection, then
          -events events one every -interval: CPU per delivery and the time
          for each event to reach every subscriber (p50/p99/max)
  spread  -conns subscribers over -repos repos, -spread-events events
          round-robin over the repos at -spread-rate/s: the cost of filtering
  rate    -rate-conns subscribers on one repo, -publishers concurrent
          publishers unpaced for -rate-duration; if anything is lost, paced
          retries at 80% of the achieved rate (-rate-tries in all)

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.target, "target", "refcast", "server kind: refcast or nchan")
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "server base URL (loopback only)")
	fs.StringVar(&c.token, "token", os.Getenv("REFCAST_PUBLISH_TOKEN"), "refcast publish token (default $REFCAST_PUBLISH_TOKEN)")
	fs.IntVar(&c.pid, "pid", 0, "server process id: RSS and CPU are read from /proc for it and its children (0: no resource figures)")
	fs.StringVar(&c.pprof, "pprof", "", "pprof base URL of a node started with refcast serve --debug-addr, to count its goroutines")
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
	fs.DurationVar(&c.rateDur, "rate-duration", 10*time.Second, "rate: length of each trial")
	fs.IntVar(&c.publishers, "publishers", 8, "rate: concurrent publishers")
	fs.IntVar(&c.rateTries, "rate-tries", 3, "rate: trials at most")
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
	if err := checkLoopback(c.url); err != nil {
		return err
	}
	if c.perWorker < 1 || c.perWorker > 19000 {
		return fmt.Errorf("-per-worker must be 1..19000 (a process may hold at most 20,000 files)")
	}
	var t target
	switch c.target {
	case "refcast":
		if c.token == "" {
			return fmt.Errorf("refcast needs a publish token: -token or $REFCAST_PUBLISH_TOKEN")
		}
		t = &refcastTarget{base: strings.TrimRight(c.url, "/"), token: c.token}
	case "nchan":
		t = &nchanTarget{base: strings.TrimRight(c.url, "/")}
	default:
		return fmt.Errorf("-target must be refcast or nchan, got %q", c.target)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	b := &bench{cfg: &c, t: t, pub: newPublishClient(max(8, c.publishers)), out: os.Stdout}
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
			line, _ := json.Marshal(r)
			fmt.Fprintf(b.out, "RESULT %s\n", line)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", sc, err)
		}
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

// result is one scenario's figures; printed as a RESULT line of JSON.
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
}

// trial is one rate attempt.
type trial struct {
	Paced     float64 `json:"paced_per_s"` // 0: unpaced
	Published int64   `json:"published"`
	Achieved  float64 `json:"achieved_per_s"`
	Delivered int64   `json:"delivered"`
	Expected  int64   `json:"expected"`
	Dropped   int     `json:"dropped"`
	Errors    int     `json:"publish_errors"`
	CPUPerDel float64 `json:"cpu_us_per_delivery,omitempty"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	Sustained bool    `json:"sustained"`
}

type bench struct {
	cfg *config
	t   target
	pub *http.Client
	out io.Writer
	run int // run ids, so a late event of a previous phase never counts
	// connected: a scenario has opened streams on this server before, so
	// its memory no longer starts from a fresh process.
	connected bool
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, format+"\n", args...)
}

func (b *bench) sample() (procSample, bool) {
	if b.cfg.pid == 0 {
		return procSample{}, false
	}
	s, err := sampleTree(b.cfg.pid)
	if err != nil {
		b.logf("  warning: cannot read /proc/%d: %v", b.cfg.pid, err)
		return procSample{}, false
	}
	return s, true
}

// session is one scenario's workers with their streams open.
type session struct {
	p    pool
	open int
	res  *result
	s0   procSample
	ok0  bool
}

// connect starts workers, opens conns streams spread over repos, waits for
// settle, and fills the connection and memory figures of res.
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
	prefix, suffix := b.t.subscribePath(cursor)
	u, _ := url.Parse(c.url)
	s := &session{res: res}
	s.s0, s.ok0 = b.sample()
	if c.pprof != "" {
		res.GoroutinesB, _ = goroutines(ctx, c.pprof)
	}
	p, err := startPool(ctx, conns, c.perWorker, c.addrBase)
	if err != nil {
		return nil, err
	}
	s.p = p
	res.Workers = len(p)
	start := time.Now()
	sts, err := p.each(func(w *workerProc) workerCmd {
		return workerCmd{Op: "connect", Connect: &connectSpec{
			Server: u.Host, LocalIP: w.ip, Host: u.Host, Prefix: prefix, Suffix: suffix,
			RepoFmt: b.t.repoFmt(), Repos: repos, Start: w.start, Count: w.count,
			Concurrency: c.connConc, Timeout: 15 * time.Second,
		}}
	})
	res.ConnectSec = time.Since(start).Seconds()
	if err != nil {
		p.close()
		return nil, err
	}
	open, failed, _, _, errs := totals(sts)
	s.open, res.Open, res.FailedConns, res.FirstErrors = open, open, failed, errs
	b.logf("  connect: %d/%d streams open in %.1fs from %d workers (%d failed)", open, conns, res.ConnectSec, len(p), failed)
	if open == 0 {
		p.close()
		return nil, fmt.Errorf("no stream opened: %v", errs)
	}
	if ok := sleepCtx(ctx, c.settle); !ok {
		p.close()
		return nil, ctx.Err()
	}
	first := !b.connected
	b.connected = true
	if s1, ok := b.sample(); ok && s.ok0 {
		res.RSSBeforeKB, res.RSSAfterKB = s.s0.rssKB, s1.rssKB
		// Only a server's first connections say what a connection costs:
		// later ones reuse memory the earlier ones freed.
		if first {
			res.RSSPerConn = float64(s1.rssKB-s.s0.rssKB) * 1024 / float64(open)
			res.PSSPerConn = float64(s1.pssKB-s.s0.pssKB) * 1024 / float64(open)
		}
		// idle CPU: one more second of nothing
		if sleepCtx(ctx, time.Second) {
			if s2, ok := b.sample(); ok {
				res.IdleCPUPerS = float64(s2.cpu-s1.cpu) / float64(time.Millisecond)
			}
		}
		b.logf("  memory: server RSS %.1f MiB -> %.1f MiB over %d idle streams: %.0f B/conn (PSS %.0f B/conn; per-connection figures are 0 unless these are the server's first streams); idle CPU %.0f ms/s",
			float64(s.s0.rssKB)/1024, float64(s1.rssKB)/1024, open, res.RSSPerConn, res.PSSPerConn, res.IdleCPUPerS)
	}
	if c.pprof != "" {
		res.GoroutinesA, _ = goroutines(ctx, c.pprof)
		b.logf("  goroutines: %d before connecting, %d with %d idle streams", res.GoroutinesB, res.GoroutinesA, open)
	}
	return s, nil
}

// waitReady polls refcast's /readyz until it answers 200 or d passes.
func (b *bench) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.cfg.url+wire.PathReady, nil)
		if err != nil {
			return err
		}
		resp, err := b.pub.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node not ready after %v: %w", d, err)
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// currentCursor opens one stream and reads the cursor of its hello.
func (b *bench) currentCursor(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.cfg.url+wire.PathEvents+"?"+wire.ParamRepo+"=bench/cursor", nil)
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

// reset starts a new run in every worker with events per-event slots.
func (b *bench) reset(s *session, events int) (int, error) {
	b.run++
	_, err := s.p.each(func(*workerProc) workerCmd { return workerCmd{Op: "reset", Run: b.run, Events: events} })
	return b.run, err
}

// waitReceived polls the workers until they hold want events or the
// deadline passes; it returns the last totals.
func (b *bench) waitReceived(ctx context.Context, s *session, want int64, d time.Duration) (received int64, dropped int, err error) {
	deadline := time.Now().Add(d)
	for {
		sts, err := s.p.each(func(*workerProc) workerCmd { return workerCmd{Op: "stats"} })
		if err != nil {
			return 0, 0, err
		}
		_, _, dropped, received, _ = totals(sts)
		if received >= want || time.Now().After(deadline) || ctx.Err() != nil {
			return received, dropped, ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// perEvent gathers, for events [from, to), how many deliveries each had and
// the latest of them (the time to reach every subscriber).
func (b *bench) perEvent(s *session, from, to int) (counts []int64, maxLat []time.Duration, err error) {
	sts, err := s.p.each(func(*workerProc) workerCmd { return workerCmd{Op: "stats", Detail: true} })
	if err != nil {
		return nil, nil, err
	}
	counts = make([]int64, to-from)
	maxLat = make([]time.Duration, to-from)
	for _, st := range sts {
		for i := from; i < to && i < len(st.Counts); i++ {
			counts[i-from] += st.Counts[i]
			maxLat[i-from] = max(maxLat[i-from], time.Duration(st.MaxLat[i]))
		}
	}
	return counts, maxLat, nil
}

func (b *bench) publish(ctx context.Context, repoIdx, run, seq int) error {
	repo := fmt.Sprintf(b.t.repoFmt(), repoIdx)
	return b.t.publish(ctx, b.pub, repo, run, seq, time.Now())
}

// fanout: every subscriber on one repo; events one at a time.
func (b *bench) fanout(ctx context.Context) (*result, error) {
	c := b.cfg
	res := &result{Label: c.label, Target: c.target, Scenario: "fanout", Conns: c.conns, Events: c.events}
	b.logf("fanout: %s, %d subscribers on one repo, %d events every %v", c.target, c.conns, c.events, c.interval)
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
	if got, _, err := b.waitReceived(ctx, s, int64(s.open), 15*time.Second); err != nil || got < int64(s.open) {
		b.logf("  warning: warm-up event reached %d of %d streams", got, s.open)
	}
	c0, ok := b.sample()
	start := time.Now()
	for seq := 1; seq <= c.events && ctx.Err() == nil; seq++ {
		if err := b.publish(ctx, 0, run, seq); err != nil {
			res.PublishErrs++
			b.logf("  publish %d: %v", seq, err)
		}
		sleepCtx(ctx, time.Until(start.Add(time.Duration(seq)*c.interval)))
	}
	want := int64(s.open) * int64(c.events+1)
	_, dropped, err := b.waitReceived(ctx, s, want, 15*time.Second)
	if err != nil {
		return res, err
	}
	c1, ok1 := b.sample()
	counts, lat, err := b.perEvent(s, 1, c.events+1)
	if err != nil {
		return res, err
	}
	res.Dropped = dropped
	res.Expected = int64(s.open) * int64(c.events-res.PublishErrs)
	for i, n := range counts {
		res.Delivered += n
		if n < int64(s.open) {
			res.Incomplete++
			lat[i] = -1
		}
	}
	fillLatency(res, lat)
	if ok && ok1 && res.Delivered > 0 {
		res.CPUSec = (c1.cpu - c0.cpu).Seconds()
		res.CPUPerDeliv = res.CPUSec * 1e6 / float64(res.Delivered)
		res.CPUPerEvent = res.CPUSec * 1e6 / float64(c.events)
		res.RSSEventsKB = c1.rssKB
	}
	b.logf("  fanout: delivered %d/%d (%d events incomplete, %d streams dropped); server CPU %.2fs = %.2f µs/delivery; reach-all p50 %.1fms p99 %.1fms max %.1fms; RSS after events %.1f MiB",
		res.Delivered, res.Expected, res.Incomplete, res.Dropped, res.CPUSec, res.CPUPerDeliv, res.P50Ms, res.P99Ms, res.MaxMs, float64(res.RSSEventsKB)/1024)
	return res, nil
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
	repos := max(1, c.repos)
	res := &result{Label: c.label, Target: c.target, Scenario: "spread", Conns: c.conns, Repos: repos, Events: c.spreadN}
	b.logf("spread: %s, %d subscribers over %d repos, %d events at %.0f/s", c.target, c.conns, repos, c.spreadN, c.spreadRate)
	s, err := b.connect(ctx, res, c.conns, repos)
	if err != nil {
		return res, err
	}
	defer s.p.close()
	run, err := b.reset(s, c.spreadN)
	if err != nil {
		return res, err
	}
	subsOf := func(r int) int64 { // subscribers of repo r among the open ones' indices
		n := int64(c.conns / repos)
		if r < c.conns%repos {
			n++
		}
		return n
	}
	c0, ok := b.sample()
	start := time.Now()
	failed := make([]bool, c.spreadN)
	for seq := 0; seq < c.spreadN && ctx.Err() == nil; seq++ {
		if err := b.publish(ctx, seq%repos, run, seq); err != nil {
			res.PublishErrs++
			failed[seq] = true
		}
		sleepCtx(ctx, time.Until(start.Add(time.Duration(float64(seq+1)*float64(time.Second)/c.spreadRate))))
	}
	for seq := range c.spreadN {
		if !failed[seq] {
			res.Expected += subsOf(seq % repos)
		}
	}
	if res.Expected > int64(0) && s.open < c.conns { // some streams never opened: scale down
		res.Expected = res.Expected * int64(s.open) / int64(c.conns)
	}
	_, dropped, err := b.waitReceived(ctx, s, res.Expected, 15*time.Second)
	if err != nil {
		return res, err
	}
	c1, ok1 := b.sample()
	counts, lat, err := b.perEvent(s, 0, c.spreadN)
	if err != nil {
		return res, err
	}
	res.Dropped = dropped
	kept := lat[:0]
	for i, n := range counts {
		res.Delivered += n
		if failed[i] {
			continue // not published: neither expected nor late
		}
		if n < subsOf(i%repos) && s.open == c.conns {
			res.Incomplete++
			lat[i] = -1
		}
		kept = append(kept, lat[i])
	}
	lat = kept
	fillLatency(res, lat)
	if ok && ok1 && res.Delivered > 0 {
		res.CPUSec = (c1.cpu - c0.cpu).Seconds()
		res.CPUPerDeliv = res.CPUSec * 1e6 / float64(res.Delivered)
		res.CPUPerEvent = res.CPUSec * 1e6 / float64(c.spreadN)
	}
	b.logf("  spread: delivered %d/%d (%d events incomplete, %d dropped); server CPU %.2fs = %.2f µs/delivery, %.0f µs/event; reach-all p50 %.1fms p99 %.1fms max %.1fms",
		res.Delivered, res.Expected, res.Incomplete, res.Dropped, res.CPUSec, res.CPUPerDeliv, res.CPUPerEvent, res.P50Ms, res.P99Ms, res.MaxMs)
	return res, nil
}

// rate: the highest publish rate sustained for -rate-duration with nothing
// lost, at -rate-conns subscribers on one repo.
func (b *bench) rate(ctx context.Context) (*result, error) {
	c := b.cfg
	res := &result{Label: c.label, Target: c.target, Scenario: "rate", Conns: c.rateConns}
	b.logf("rate: %s, %d subscribers on one repo, %d publishers, %v per trial", c.target, c.rateConns, c.publishers, c.rateDur)
	s, err := b.connect(ctx, res, c.rateConns, 1)
	if err != nil {
		return res, err
	}
	defer s.p.close()
	u, _ := url.Parse(c.url)
	paced := 0.0
	for try := 0; try < c.rateTries && ctx.Err() == nil; try++ {
		if try > 0 { // reopen what the last trial lost
			prefix, suffix := b.t.subscribePath("")
			if _, err := s.p.each(func(w *workerProc) workerCmd {
				return workerCmd{Op: "connect", Connect: &connectSpec{
					Server: u.Host, LocalIP: w.ip, Host: u.Host, Prefix: prefix, Suffix: suffix,
					RepoFmt: b.t.repoFmt(), Repos: 1, Start: w.start, Count: w.count,
					Concurrency: c.connConc, Timeout: 15 * time.Second,
				}}
			}); err != nil {
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
		if tr.Sustained {
			res.Rate = tr.Achieved
			res.P50Ms, res.P99Ms, res.CPUPerDeliv = tr.P50Ms, tr.P99Ms, tr.CPUPerDel
			break
		}
		paced = 0.8 * tr.Achieved
	}
	b.logf("  rate: highest sustained with nothing lost: %.1f events/s (= %.0f deliveries/s)", res.Rate, res.Rate*float64(s.open))
	return res, nil
}

func pacedName(r float64) string {
	if r == 0 {
		return "unpaced"
	}
	return fmt.Sprintf("paced %.0f/s", r)
}

// maxRateEvents bounds the per-event slots of a rate trial.
const maxRateEvents = 200000

func (b *bench) rateTrial(ctx context.Context, s *session, paced float64) (trial, error) {
	c := b.cfg
	tr := trial{Paced: paced}
	sts, err := s.p.each(func(*workerProc) workerCmd { return workerCmd{Op: "stats"} })
	if err != nil {
		return tr, err
	}
	open, _, dropped0, _, _ := totals(sts)
	run, err := b.reset(s, maxRateEvents)
	if err != nil {
		return tr, err
	}
	c0, ok := b.sample()
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
				if err := b.publish(ctx, 0, run, seq); err != nil {
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
	tr.Expected = tr.Published * int64(open)
	got, dropped, err := b.waitReceived(ctx, s, tr.Expected, 5*time.Second)
	if err != nil {
		return tr, err
	}
	c1, ok1 := b.sample()
	tr.Delivered, tr.Dropped = got, dropped-dropped0
	if ok && ok1 && got > 0 {
		tr.CPUPerDel = (c1.cpu - c0.cpu).Seconds() * 1e6 / float64(got)
	}
	n := int(min(int64(maxRateEvents), next.Load()))
	_, lat, err := b.perEvent(s, 0, n)
	if err != nil {
		return tr, err
	}
	var kept []time.Duration
	for i, l := range lat {
		if ok2[i].Load() {
			kept = append(kept, l)
		}
	}
	tr.P50Ms, tr.P99Ms, _ = latencyMs(kept)
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
