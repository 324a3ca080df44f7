package relay

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/watermark"
)

// Defaults for Options.
const (
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between
	// attempts of one delivery: 1 s doubling to 5 min, GitHub's and
	// Stripe's order of magnitude, so a receiver down for an hour gets
	// about 15 attempts, not thousands.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// DefaultMaxPending bounds the updates held (received, not yet
	// acknowledged by every target). When full, Handle blocks, which stops
	// the reader; the node then drops the stream and the relay resumes
	// from its cursor later. 10 000 updates of ~1 KiB each is ~10 MiB.
	DefaultMaxPending = 10000
	// DefaultMaxRefs bounds the refs whose last delivered id the relay
	// remembers, over all repos, to compare a reset's snapshot with. The
	// state file holds them and is rewritten whenever the safe cursor
	// moves: 10 000 refs of ~70 bytes of JSON each is a ~700 KiB file.
	// A ref past the bound is not remembered: a reset sends it whatever
	// its id (never skips it), and cannot derive its deletion.
	DefaultMaxRefs = 10000
)

// Outcomes counted in refcast_relay_deliveries_total.
const (
	OutcomeDelivered  = "delivered"   // a 2xx answer
	OutcomeFailed     = "failed"      // an attempt that will be retried
	OutcomeDeadLetter = "dead_letter" // given up after MaxAttempts
)

// ErrClosed is returned by Handle after Close.
var ErrClosed = errors.New("relay closed")

// Update is one ref update to deliver.
type Update struct {
	// Cursor is the stream position of the frame the update came from;
	// the relay reports it as safe once every target is done with it and
	// with everything before it.
	Cursor string
	// Event is the update. An Event without Repo only carries Cursor (a
	// hello frame); a KindSync event has no ref to report and no target
	// gets it.
	Event bus.Event
	// Reset marks an update made from a reset snapshot (the node could not
	// replay): Old is what the relay last delivered, not what the ref was.
	Reset bool
}

// Options configures a Relay. Zero values take the defaults.
type Options struct {
	Targets []*Target
	// MaxAttempts per delivery; 0 retries forever.
	MaxAttempts int
	// DeadLetter is the directory where an update given up is written;
	// empty logs it only.
	DeadLetter string
	MaxPending int
	// MaxRefs bounds the refs remembered (see DefaultMaxRefs).
	MaxRefs    int
	MinBackoff time.Duration
	MaxBackoff time.Duration
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Registerer gets the relay's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Sleep waits d or until ctx is done; tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Relay delivers updates to targets. Handle is called by one goroutine
// (the stream reader), in stream order; Safe and Changed are safe for
// concurrent use. Per target and repo, updates are delivered one at a time
// in the order handled, each retried until acknowledged or dead-lettered;
// other repos and other targets do not wait for them.
type Relay struct {
	opts Options // set at construction

	stop      context.Context // done: no new attempts; set at construction
	stopNow   context.CancelFunc
	abort     context.Context // done: in-flight requests are cancelled
	abortNow  context.CancelFunc
	wg        sync.WaitGroup // the lanes
	delivered *prometheus.CounterVec

	mu    sync.Mutex
	lanes map[laneKey]*lane // running lanes; guarded by mu
	// mark orders the updates handled and finds the safe cursor; guarded
	// by mu but for Reserve and Changed. Each entry waits for one
	// delivery per target that wants it.
	mark *watermark.Mark[pendingUpdate]
	// known is, per repo and ref, the id of the last update handled
	// (queued, perhaps not yet delivered): a reset is compared with it.
	// done is the same as of Safe: updates acknowledged or dead-lettered
	// by every target, what --state keeps. Both guarded by mu.
	known, done refBook
	closed      bool // no lane may start after Close; guarded by mu
}

type laneKey struct {
	target *Target
	repo   string
}

// lane is one target's queue of one repo; owned by its goroutine, items
// guarded by Relay.mu.
type lane struct {
	target *Target
	items  []item
}

type item struct {
	seq uint64
	u   Update
}

// pendingUpdate is what the relay keeps of an update until every target
// is done with it: its time for the lag, and the ref it sets for done
// (empty ref: an update no target wanted, or a position only).
type pendingUpdate struct {
	time           time.Time
	repo, ref, new string
}

// New checks opts and returns a relay ready for Handle.
func New(opts Options) (*Relay, error) {
	if len(opts.Targets) == 0 {
		return nil, errors.New("no targets")
	}
	names := map[string]bool{}
	for _, t := range opts.Targets {
		if err := t.check(); err != nil {
			return nil, err
		}
		if names[t.Name] {
			return nil, fmt.Errorf("two targets are named %q: give each a distinct name", t.Name)
		}
		names[t.Name] = true
	}
	if opts.MaxAttempts < 0 {
		return nil, errors.New("max attempts must not be negative (0: retry forever)")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.MaxRefs <= 0 {
		opts.MaxRefs = DefaultMaxRefs
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{CheckRedirect: noRedirect}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepCtx
	}
	r := &Relay{opts: opts, lanes: map[laneKey]*lane{}, known: newRefBook(opts.MaxRefs), done: newRefBook(opts.MaxRefs)}
	r.mark = watermark.New(opts.MaxPending, "", r.finished)
	r.stop, r.stopNow = context.WithCancel(context.Background())
	r.abort, r.abortNow = context.WithCancel(context.Background())
	r.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "refcast_relay_deliveries_total",
		Help: "Delivery attempts by target and outcome: delivered (2xx), failed (retried), dead_letter (given up).",
	}, []string{"target", "outcome"})
	for _, t := range opts.Targets {
		for _, o := range []string{OutcomeDelivered, OutcomeFailed, OutcomeDeadLetter} {
			r.delivered.WithLabelValues(t.Name, o)
		}
	}
	if reg := opts.Registerer; reg != nil {
		lag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "refcast_relay_lag_seconds",
			Help: "Age of the oldest update not yet acknowledged by every target (0 when none).",
		}, r.lag)
		pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "refcast_relay_pending",
			Help: "Updates received and not yet acknowledged or dead-lettered by every target.",
		}, func() float64 { r.mu.Lock(); defer r.mu.Unlock(); return float64(r.mark.Len()) })
		for _, c := range []prometheus.Collector{r.delivered, lag, pending} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register relay metrics: %w", err)
			}
		}
	}
	return r, nil
}

// noRedirect makes a redirect an answer, not something followed: a
// webhook POST re-sent as a GET elsewhere is not a delivery.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Resume sets, before anything is handled, the cursor the relay resumed
// from and the ids it had delivered as of that cursor (what Remembered
// returned when it was stored; nil when unknown, as in a state file of an
// older version): a reset is compared with them. Refs past MaxRefs are
// not remembered.
func (r *Relay) Resume(cursor string, refs map[string]map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mark.SetSafe(cursor)
	r.done.load(refs)
	r.known.load(refs)
}

// Safe returns the latest cursor such that every update at or before it
// was acknowledged or dead-lettered by every target.
func (r *Relay) Safe() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mark.Safe()
}

// Remembered returns Safe and, consistent with it, a copy of the id last
// delivered per repo and ref (acknowledged or dead-lettered by every
// target that wants the ref; at most MaxRefs refs): what a state file
// keeps, so that a reset after a restart sends only what changed.
func (r *Relay) Remembered() (cursor string, refs map[string]map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mark.Safe(), r.done.copy()
}

// Changed is signalled (without blocking, coalesced) when Safe or
// Remembered may have moved.
func (r *Relay) Changed() <-chan struct{} { return r.mark.Changed() }

// Handle queues u for every target that wants it. It blocks while
// MaxPending updates are held, until ctx is done or the relay is closed.
func (r *Relay) Handle(ctx context.Context, u Update) error {
	if err := r.mark.Reserve(ctx, r.stop.Done()); err != nil {
		if errors.Is(err, watermark.ErrStopped) {
			return ErrClosed
		}
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.mark.Unreserve()
		return ErrClosed
	}
	ev := u.Event
	p := pendingUpdate{time: ev.Time}
	var targets []*Target
	if ev.Repo != "" && ev.Ref != "" && ev.Kind != bus.KindSync {
		for _, t := range r.opts.Targets {
			if t.matches(ev.Repo, ev.Ref) {
				targets = append(targets, t)
			}
		}
	}
	if len(targets) > 0 {
		// Only refs some target wants are remembered: a reset's update
		// of another ref would go nowhere anyway.
		p.repo, p.ref, p.new = ev.Repo, ev.Ref, ev.New
		r.known.set(ev.Repo, ev.Ref, ev.New)
	}
	seq := r.mark.Add(u.Cursor, len(targets), p)
	for _, t := range targets {
		k := laneKey{t, ev.Repo}
		l := r.lanes[k]
		if l == nil {
			l = &lane{target: t}
			r.lanes[k] = l
			r.wg.Add(1)
			go r.run(k, l)
		}
		l.items = append(l.items, item{seq: seq, u: u})
	}
	return nil
}

// finished is the mark's pop hook: every target is done with p, and with
// everything before it. Called with mu held.
func (r *Relay) finished(p pendingUpdate) {
	if p.ref != "" {
		r.done.set(p.repo, p.ref, p.new)
	}
}

// run is a lane's goroutine: it delivers the lane's items in order and
// exits when the lane is empty or the relay stops.
func (r *Relay) run(k laneKey, l *lane) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		if len(l.items) == 0 {
			delete(r.lanes, k)
			r.mu.Unlock()
			return
		}
		it := l.items[0]
		r.mu.Unlock()
		if !r.deliver(l.target, it.u) {
			return // stopping: the update stays owed, the cursor before it
		}
		r.mu.Lock()
		l.items = l.items[1:]
		r.mark.Done(it.seq)
		r.mu.Unlock()
	}
}

// lag is the age of the oldest pending update, in seconds.
func (r *Relay) lag() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.mark.Oldest()
	if !ok || p.time.IsZero() {
		return 0
	}
	return time.Since(p.time).Seconds()
}

// Close stops the relay: no new attempt starts, backoff waits end, and
// requests in flight get until drain to finish (an acknowledgement that
// arrives in time counts) before they are cancelled. It returns when every
// lane has exited. Updates not acknowledged stay before Safe.
func (r *Relay) Close(drain time.Duration) {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.stopNow()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	t := time.NewTimer(drain)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.abortNow()
		<-done
	}
	r.abortNow()
}

// DeliveryID is the id of u's delivery to the target named target: the
// same on every retry and after a restart (it is derived from the push id
// and ref; a reset's updates carry the reset's cursor as push id), different per target. It is
// shaped as a UUID, as GitHub's X-GitHub-Delivery is.
func DeliveryID(target string, u Update) string {
	key := "push\x00" + u.Event.PushID
	if u.Event.PushID == "" {
		key = "cursor\x00" + u.Cursor
	}
	s := sha256.Sum256([]byte("refcast-relay\x00" + target + "\x00" + key + "\x00" + u.Event.Ref))
	s[6] = s[6]&0x0f | 0x80 // version 8: custom
	s[8] = s[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// deliver sends u to t until acknowledged or dead-lettered (true), or until
// the relay stops (false).
func (r *Relay) deliver(t *Target, u Update) bool {
	id := DeliveryID(t.Name, u)
	log := r.opts.Logger.With("target", t.Name, "repo", u.Event.Repo, "ref", u.Event.Ref, "delivery", id)
	for attempt := 1; ; attempt++ {
		if r.stop.Err() != nil {
			return false
		}
		res := r.attempt(t, u, id)
		if res.err == nil && res.status/100 == 2 {
			r.delivered.WithLabelValues(t.Name, OutcomeDelivered).Inc()
			return true
		}
		if r.abort.Err() != nil {
			return false // cancelled by Close: not an answer
		}
		if res.permanent || (r.opts.MaxAttempts > 0 && attempt >= r.opts.MaxAttempts) {
			r.delivered.WithLabelValues(t.Name, OutcomeDeadLetter).Inc()
			log.Error("delivery given up", "attempts", attempt, "status", res.status, "err", res.errText())
			if err := r.deadLetter(t, u, id, attempt, res); err != nil {
				log.Error("dead letter not written", "err", err)
			}
			return true
		}
		r.delivered.WithLabelValues(t.Name, OutcomeFailed).Inc()
		d := r.backoff(attempt, res.retryAfter)
		log.Warn("delivery failed, retrying", "attempt", attempt, "status", res.status, "err", res.errText(), "in", d)
		if err := r.opts.Sleep(r.stop, d); err != nil {
			return false
		}
	}
}

// backoff is the wait after failed attempt n (from 1): MinBackoff doubled
// per attempt up to MaxBackoff, the upper half jittered so that receivers
// coming back are not hit by every relay at once; a Retry-After longer
// than that wins, up to MaxBackoff.
func (r *Relay) backoff(n int, retryAfter time.Duration) time.Duration {
	d := r.opts.MinBackoff
	for i := 1; i < n && d < r.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.opts.MaxBackoff)
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, r.opts.MaxBackoff)
	}
	return d
}

// result is what one attempt got.
type result struct {
	req        *http.Request
	body       []byte // the request body
	status     int
	respBody   []byte // the first 4 KiB of the answer
	retryAfter time.Duration
	err        error
	permanent  bool // the request could not be built: retrying is pointless
}

func (r result) errText() string {
	if r.err == nil {
		return ""
	}
	return r.err.Error()
}

// maxRespBody is how much of an answer is kept for the dead letter and
// read before closing (so the connection can be reused).
const maxRespBody = 4096

func (r *Relay) attempt(t *Target, u Update, id string) result {
	ctx, cancel := context.WithTimeout(r.abort, t.Timeout)
	defer cancel()
	req, body, err := t.Format.Request(ctx, t, u, id)
	if err != nil {
		return result{err: fmt.Errorf("build request: %w", err), permanent: true}
	}
	for k, vs := range t.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "refcast-relay")
	}
	res := result{req: req, body: body}
	resp, err := r.opts.HTTPClient.Do(req)
	if err != nil {
		// net/http's errors quote the URL, and the jenkins format carries
		// its token in the query: logs and dead letters must not show it.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redactQuery(ue.URL)
		}
		res.err = err
		return res
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	res.respBody, _ = io.ReadAll(io.LimitReader(resp.Body, maxRespBody))
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		res.retryAfter = time.Duration(s) * time.Second
	}
	if res.status/100 != 2 {
		res.err = fmt.Errorf("answered %d %s", res.status, http.StatusText(res.status))
	}
	return res
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

// redactQuery replaces the value of a token query parameter.
func redactQuery(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if q := u.Query(); q.Has("token") {
		q.Set("token", "REDACTED")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
