package server

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// Hub is a node's fan-out engine. One goroutine reads the bus feed and, for
// each event, encodes one frame and queues it for the subscribers whose
// filter matches, found through an index by repo so the cost of an event is
// proportional to the subscribers it concerns. A small pool of writer
// goroutines drains the queues of hijacked connections; a housekeeper on
// one shared ticker sends heartbeats (spread over the interval), retries
// stalled writes, closes expired streams and carries out a drain.
//
// The hub never blocks on a client: a full queue evicts the subscriber
// (it resumes from its cursor) or, in mode=latest, coalesces by ref.
type Hub struct {
	bus     bus.Bus          // set at construction
	opts    Options          // set at construction
	log     *slog.Logger     // set at construction
	metrics *metrics         // set at construction
	ready   chan *subscriber // subscribers with frames to write; capacity MaxConnections+1
	retry   chan *subscriber // stalled subscribers to retry, on their own writers; capacity MaxConnections+1

	mu      sync.RWMutex
	started bool                                // guarded by mu: pos and heads are valid
	pos     wire.Cursor                         // guarded by mu: position after the last dispatched event
	heads   bus.Heads                           // guarded by mu: epochs per partition
	exact   map[string]map[*subscriber]struct{} // guarded by mu: repo -> subscribers naming it exactly
	globs   map[*subscriber]struct{}            // guarded by mu: subscribers with a repo glob
	all     []*subscriber                       // guarded by mu: every subscriber, for the housekeeper
	filters map[string]*sharedFilter            // guarded by mu: interned filters by canonical form
	// matchStamp numbers events for sharedFilter's remembered match;
	// guarded by mu.
	matchStamp uint64
	perKey     map[string]int // guarded by mu: connections per client key
	draining   bool           // guarded by mu

	stallMu sync.Mutex
	stalled map[*subscriber]time.Time // guarded by stallMu: when to retry

	hbNext int // housekeeper's round-robin position; owned by the housekeeper
	// toSchedule are subscribers with frames queued by the bus reader and
	// not yet handed to a writer; owned by the bus reader.
	toSchedule []*subscriber

	laterMu sync.Mutex
	later   []*subscriber // guarded by laterMu: busy subscribers waiting for BatchDelay
	// laterSpare is later's previous array, reused so batching allocates
	// nothing in steady state; guarded by laterMu.
	laterSpare []*subscriber
	// laterBell wakes the batcher when later stops being empty; capacity 1.
	laterBell chan struct{}
}

func newHub(b bus.Bus, opts Options, log *slog.Logger, m *metrics) *Hub {
	return &Hub{
		bus:     b,
		opts:    opts,
		log:     log,
		metrics: m,
		ready:   make(chan *subscriber, opts.MaxConnections+1),
		retry:   make(chan *subscriber, opts.MaxConnections+1),
		exact:   make(map[string]map[*subscriber]struct{}),
		globs:   make(map[*subscriber]struct{}),
		filters: make(map[string]*sharedFilter),
		perKey:  make(map[string]int),
		stalled: make(map[*subscriber]time.Time),

		laterBell: make(chan struct{}, 1),
	}
}

// run owns the hub's goroutines: the bus reader, the writer pool and the
// housekeeper. It returns when ctx is done, after they all exit.
func (h *Hub) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range h.opts.Writers {
		wg.Go(func() { h.writer(ctx, h.ready) })
	}
	// Retries of stalled sockets each wait StallTimeout; they have their
	// own writers so a crowd of stuck clients cannot delay the others.
	for range max(1, h.opts.Writers/2) {
		wg.Go(func() { h.writer(ctx, h.retry) })
	}
	wg.Go(func() { h.housekeeper(ctx) })
	if h.opts.BatchDelay > 0 {
		wg.Go(func() { h.batcher(ctx) })
	}
	err := h.read(ctx)
	cancel() // read returns early only when the bus is closed: stop the rest too
	wg.Wait()
	h.closeAll()
	return err
}

// read follows the bus from its current heads, resubscribing from the
// hub's position if the feed ends while ctx is alive.
func (h *Hub) read(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		from, err := h.startPosition(ctx)
		if err == nil {
			var sub bus.Subscription
			sub, err = h.bus.Subscribe(ctx, from)
			if err == nil {
				backoff = 50 * time.Millisecond
				h.follow(ctx, sub)
				_ = sub.Close()
				if ctx.Err() != nil {
					return nil
				}
				err = errors.New("bus feed ended")
			}
		}
		if errors.Is(err, bus.ErrClosed) {
			return err
		}
		h.log.Warn("bus feed unavailable, retrying", "err", err, "backoff", backoff)
		h.metrics.busReconnects.Inc()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// startPosition is the bus's heads on first start, and the hub's own
// position after that, so a resubscription misses nothing.
func (h *Hub) startPosition(ctx context.Context) (bus.Heads, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started {
		from := append(bus.Heads(nil), h.heads...)
		for p := range from {
			from[p].Last = h.pos.Seqs[p]
		}
		return from, nil
	}
	heads, err := h.bus.Heads(ctx)
	if err != nil {
		return nil, err
	}
	h.heads = heads
	h.pos = wire.Cursor{Epoch: wire.EpochFingerprint(heads), Seqs: make([]uint64, len(heads))}
	for p, hd := range heads {
		h.pos.Seqs[p] = hd.Last
	}
	h.started = true
	return append(bus.Heads(nil), heads...), nil
}

func (h *Hub) follow(ctx context.Context, sub bus.Subscription) {
	var msgs []bus.Message
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-sub.C():
			if !ok {
				return
			}
			// Take the messages already waiting too, and queue all their
			// events before a writer sees any: a subscriber that several
			// of them match gets them in one write, so under load a
			// connection costs one syscall per batch rather than one per
			// event. The last event's subscribers are handed to writers
			// as they are found, so an event that arrives alone starts
			// going out at once.
			msgs = append(msgs[:0], msg)
			n, open := len(msg.Events), true
			for more := true; more && open && n < maxDispatchBatch; {
				select {
				case msg, open = <-sub.C():
					if open {
						msgs = append(msgs, msg)
						n += len(msg.Events)
					}
				default:
					more = false
				}
			}
			for i := range msgs {
				h.handle(msgs[i], i == len(msgs)-1)
			}
			clear(msgs)
			h.flushScheduled()
			if !open {
				return
			}
		}
	}
}

// maxDispatchBatch bounds the events queued before the subscribers they
// concern are handed to writers, within one message as across messages.
const maxDispatchBatch = 256

// handOffChunk is how many subscribers of the last event of a batch are
// collected before they are handed to writers.
const handOffChunk = 256

// handle queues a bus message's events, or carries out a reset. last: the
// message ends the batch.
func (h *Hub) handle(msg bus.Message, last bool) {
	if msg.Reset {
		h.flushScheduled()
		h.reset(msg)
		return
	}
	for i := range msg.Events {
		h.queueEvent(&msg.Events[i], last && i == len(msg.Events)-1)
		if (i+1)%maxDispatchBatch == 0 && i+1 < len(msg.Events) {
			// A large push is written while it is still being queued, so
			// queues stay near their bound and mode=latest streams do
			// not fold (or get evicted) for lack of a writer.
			h.flushScheduled()
		}
	}
}

// flushScheduled hands the subscribers queued to by queueEvent to the
// writers (handOff). Called by the bus reader only, without h.mu.
func (h *Hub) flushScheduled() {
	h.handOff()
	if cap(h.toSchedule) > 4096 && h.count() < cap(h.toSchedule)/4 {
		h.toSchedule = nil // do not keep a large array after the crowd left
	}
}

// handOff hands the subscribers in toSchedule to the writers: at once if
// the connection has not been written for BatchDelay, else (a busy
// connection) through the batcher, so its events share a write. Called by
// the bus reader only; it never blocks, so it may hold h.mu.
func (h *Hub) handOff() {
	if h.opts.BatchDelay > 0 && len(h.toSchedule) > 0 {
		recent := time.Now().Add(-h.opts.BatchDelay).UnixNano()
		kept := h.toSchedule[:0]
		ring := false
		h.laterMu.Lock()
		for _, s := range h.toSchedule {
			if s.conn != nil && s.lastWrite.Load() > recent && !s.queueHalfFull(h.opts.MaxQueue) {
				ring = ring || len(h.later) == 0
				h.later = append(h.later, s)
			} else {
				kept = append(kept, s)
			}
		}
		h.laterMu.Unlock()
		clear(h.toSchedule[len(kept):])
		h.toSchedule = kept
		if ring {
			select {
			case h.laterBell <- struct{}{}:
			default:
			}
		}
	}
	for i, s := range h.toSchedule {
		h.schedule(s)
		h.toSchedule[i] = nil
	}
	h.toSchedule = h.toSchedule[:0]
}

// batcher hands busy subscribers to the writers BatchDelay after the first
// of them was set aside, with every event that arrived for them meanwhile.
// It has no timer while nothing waits.
func (h *Hub) batcher(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.laterBell:
		}
		// Wait until BatchDelay has passed since the first waiting
		// stream's last write; the others set aside meanwhile go along.
		wait := h.opts.BatchDelay
		h.laterMu.Lock()
		if len(h.later) > 0 {
			last := time.Unix(0, h.later[0].lastWrite.Load())
			wait = min(max(time.Until(last.Add(h.opts.BatchDelay)), 0), h.opts.BatchDelay)
		}
		h.laterMu.Unlock()
		t.Reset(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		h.laterMu.Lock()
		subs := h.later
		h.later = h.laterSpare[:0]
		h.laterMu.Unlock()
		for _, s := range subs {
			h.schedule(s)
		}
		clear(subs)
		h.laterMu.Lock()
		h.laterSpare = subs[:0]
		if cap(h.laterSpare) > 4096 && cap(h.laterSpare) > 4*len(h.later) {
			h.laterSpare = nil // do not keep a large array after the crowd left
		}
		h.laterMu.Unlock()
	}
}

// dispatch queues one event and hands its subscribers to writers at once.
func (h *Hub) dispatch(ev *bus.Event) {
	h.queueEvent(ev, true)
	h.flushScheduled()
}

// queueEvent encodes an event once and queues it for every matching
// subscriber; the subscribers that need a writer are collected in
// toSchedule for flushScheduled, or handed off every handOffChunk when
// last (no event follows in this batch). Called by the bus reader only.
func (h *Hub) queueEvent(ev *bus.Event, last bool) {
	h.metrics.eventsIn.Inc()
	var evict []*subscriber
	h.mu.Lock()
	if ev.Seq <= h.pos.Seqs[ev.Partition] {
		h.mu.Unlock() // already seen (a resubscription overlapping)
		return
	}
	h.pos.Seqs[ev.Partition] = ev.Seq
	pos := append([]uint64(nil), h.pos.Seqs...)
	f := &frame{ev: ev, pos: pos, epoch: h.pos.Epoch}
	f.data = wire.AppendEventFrame(make([]byte, 0, 512), wire.EventName(ev), wire.Cursor{Epoch: h.pos.Epoch, Seqs: pos}, ev)
	n := 0
	// Subscribers with the same filter share one interned filter: its ref
	// match is computed once per event and remembered in it (stamp).
	h.matchStamp++
	stamp := h.matchStamp
	deliver := func(s *subscriber, repoMatched bool) {
		if repoMatched {
			sf := s.shared
			if sf.stamp != stamp {
				sf.stamp, sf.match = stamp, s.filter.MatchEventRef(ev)
			}
			if !sf.match {
				return
			}
		} else if !s.filter.Match(ev) {
			return
		}
		n++
		ok, schedule := s.add(f, h.opts.MaxQueue)
		if !ok {
			evict = append(evict, s)
		}
		if schedule {
			h.toSchedule = append(h.toSchedule, s)
			if last && len(h.toSchedule) >= handOffChunk {
				h.handOff()
			}
		}
	}
	for s := range h.exact[ev.Repo] {
		deliver(s, true) // the index matched the repo
	}
	for s := range h.globs {
		deliver(s, false)
	}
	h.mu.Unlock()
	h.metrics.deliveries.Add(float64(n))
	if !ev.Time.IsZero() {
		h.metrics.fanoutLatency.Observe(time.Since(ev.Time).Seconds())
	}
	for _, s := range evict {
		h.remove(s, "queue_full")
	}
}

// reset handles a partition whose history was lost: the hub moves to the
// new epoch and closes every stream with a retry hint; clients reconnect
// with their cursor, which no longer fits, and receive a reset event with
// the current snapshot.
func (h *Hub) reset(msg bus.Message) {
	h.log.Warn("bus history lost, clients will resync", "partition", msg.Partition, "epoch", msg.Head.Epoch)
	h.metrics.resets.Inc()
	h.mu.Lock()
	h.heads[msg.Partition] = msg.Head
	h.pos.Seqs[msg.Partition] = msg.Head.Last
	h.pos.Epoch = wire.EpochFingerprint(h.heads)
	subs := append([]*subscriber(nil), h.all...)
	h.mu.Unlock()
	for _, s := range subs {
		h.closeWithRetry(s)
	}
}

// position returns a copy of the hub's position and heads, for a client
// that registers now. ok is false until the hub has read the bus once.
func (h *Hub) position() (wire.Cursor, bus.Heads, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.started {
		return wire.Cursor{}, nil, false
	}
	return h.pos.Clone(), append(bus.Heads(nil), h.heads...), true
}

// Errors from register, mapped to 503 by the handlers.
var (
	errTooManyConnections = errors.New("too many connections on this node")
	errTooManyForClient   = errors.New("too many connections from this client")
	errDraining           = errors.New("node is draining")
	errNotReady           = errors.New("node is not connected to the bus yet")
)

// register adds a subscriber and returns the position from which it will
// receive live frames: every event after it is queued to s, none before.
func (h *Hub) register(s *subscriber) (wire.Cursor, bus.Heads, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !h.started:
		return wire.Cursor{}, nil, errNotReady
	case h.draining:
		return wire.Cursor{}, nil, errDraining
	case len(h.all) >= h.opts.MaxConnections:
		h.metrics.rejected.WithLabelValues("node_limit").Inc()
		return wire.Cursor{}, nil, errTooManyConnections
	case s.client != "" && h.opts.MaxPerClient > 0 && h.perKey[s.client] >= h.opts.MaxPerClient:
		h.metrics.rejected.WithLabelValues("client_limit").Inc()
		return wire.Cursor{}, nil, errTooManyForClient
	}
	h.intern(s)
	glob := false
	for _, p := range s.filter.Repos {
		if !p.Exact() {
			glob = true
		}
	}
	if glob {
		h.globs[s] = struct{}{}
	} else {
		for _, p := range s.filter.Repos {
			m := h.exact[p.String()]
			if m == nil {
				m = make(map[*subscriber]struct{})
				h.exact[p.String()] = m
			}
			m[s] = struct{}{}
		}
	}
	s.idx = len(h.all)
	h.all = append(h.all, s)
	if s.client != "" {
		h.perKey[s.client]++
	}
	s.lastWrite.Store(time.Now().UnixNano())
	h.metrics.connections.Set(float64(len(h.all)))
	return h.pos.Clone(), append(bus.Heads(nil), h.heads...), nil
}

// remove unregisters and closes a subscriber. Safe to call more than once
// and from any goroutine but one holding h.mu.
func (h *Hub) remove(s *subscriber, reason string) {
	h.mu.Lock()
	if s.idx < 0 || s.idx >= len(h.all) || h.all[s.idx] != s {
		h.mu.Unlock()
		s.markClosed()
		return
	}
	last := len(h.all) - 1
	h.all[s.idx] = h.all[last]
	h.all[s.idx].idx = s.idx
	h.all[last] = nil
	h.all = h.all[:last]
	s.idx = -1
	h.release(s)
	delete(h.globs, s)
	for _, p := range s.filter.Repos {
		if m := h.exact[p.String()]; m != nil {
			delete(m, s)
			if len(m) == 0 {
				delete(h.exact, p.String())
			}
		}
	}
	if s.client != "" {
		if h.perKey[s.client]--; h.perKey[s.client] <= 0 {
			delete(h.perKey, s.client)
		}
	}
	h.metrics.connections.Set(float64(len(h.all)))
	h.mu.Unlock()

	h.stallMu.Lock()
	delete(h.stalled, s)
	h.stallMu.Unlock()
	s.markClosed()
	if reason != "closed" && reason != "client_gone" {
		h.metrics.evictions.WithLabelValues(reason).Inc()
	}
	h.log.Debug("stream closed", "reason", reason, "client", s.client)
}

// markClosed stops further writes and releases the connection.
func (s *subscriber) markClosed() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.queue = nil
	conn := s.conn
	s.mu.Unlock()
	if already {
		return
	}
	if conn != nil {
		_ = conn.Close()
	}
	if s.done != nil {
		close(s.done)
	}
}

// schedule hands a subscriber with queued frames to its writer. It never
// blocks for long: a subscriber is in ready at most once (scheduled), and
// ready holds one slot per allowed connection.
func (h *Hub) schedule(s *subscriber) {
	if s.conn == nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return
	}
	h.ready <- s
}

// goLive ends a subscriber's replay: queued live frames start flowing.
func (h *Hub) goLive(s *subscriber, floor []uint64) {
	s.mu.Lock()
	s.live = true
	s.floor = floor
	schedule := len(s.queue) > 0 && !s.scheduled && !s.closed
	if schedule {
		s.scheduled = true
	}
	s.mu.Unlock()
	if schedule {
		h.schedule(s)
	}
}

func (h *Hub) writer(ctx context.Context, ready chan *subscriber) {
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case s := <-ready:
			s.flushConn()
		}
		// Under load ready never empties and a writer would keep its
		// processor for a whole scheduler time slice (10 ms), while the
		// goroutines that publish, read the bus and accept streams wait
		// behind it. Yield now and then so they run within microseconds.
		if n%writerYieldEvery == 0 {
			runtime.Gosched()
		}
	}
}

// writerYieldEvery is how many connections a writer flushes between yields.
const writerYieldEvery = 4

// stall parks a subscriber whose socket is full; the housekeeper retries it
// with a growing interval (as long as it has been stuck, between one tick
// and a second), so a crowd of stuck clients costs few retries, and evicts
// it once it has been stuck for WriteTimeout.
func (h *Hub) stall(s *subscriber) {
	now := time.Now()
	s.mu.Lock()
	if s.stalledAt.IsZero() {
		s.stalledAt = now
	}
	wait := min(max(now.Sub(s.stalledAt), housekeeperTick), time.Second)
	s.mu.Unlock()
	h.stallMu.Lock()
	h.stalled[s] = now.Add(wait)
	h.stallMu.Unlock()
	h.metrics.stalls.Inc()
}

// housekeeperTick is the shared ticker's period. Each tick visits a slice
// of the subscribers, so heartbeats are spread over the interval instead of
// bursting.
const housekeeperTick = 50 * time.Millisecond

func (h *Hub) housekeeper(ctx context.Context) {
	t := time.NewTicker(housekeeperTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.retryStalled(now)
			h.visit(now)
		}
	}
}

func (h *Hub) retryStalled(now time.Time) {
	h.stallMu.Lock()
	if len(h.stalled) == 0 {
		h.stallMu.Unlock()
		return
	}
	var retry, evict []*subscriber
	for s, next := range h.stalled {
		s.mu.Lock()
		stuck := now.Sub(s.stalledAt)
		s.mu.Unlock()
		switch {
		case stuck > h.opts.WriteTimeout:
			evict = append(evict, s)
		case !now.Before(next):
			retry = append(retry, s)
		default:
			continue
		}
		delete(h.stalled, s)
	}
	h.stallMu.Unlock()
	for _, s := range evict {
		h.remove(s, "slow_client")
	}
	for _, s := range retry {
		h.retry <- s // still holds scheduled, so it is in retry at most once
	}
}

// visit sends heartbeats to, and closes expired streams of, the next slice
// of subscribers.
func (h *Hub) visit(now time.Time) {
	var expired []*subscriber
	h.mu.RLock()
	n := len(h.all)
	if n == 0 {
		h.mu.RUnlock()
		return
	}
	per := max(1, int(int64(n)*int64(housekeeperTick)/int64(h.opts.Heartbeat))+1)
	// A stream is visited once per round; send a heartbeat to one that
	// would otherwise stay silent past Heartbeat before its next visit.
	round := time.Duration((n+per-1)/per) * housekeeperTick
	idle := now.Add(-max(h.opts.Heartbeat-round, 0)).UnixNano()
	for range min(per, n) {
		h.hbNext %= n
		s := h.all[h.hbNext]
		h.hbNext++
		if !s.expires.IsZero() && now.After(s.expires) {
			expired = append(expired, s)
			continue
		}
		if !s.waiter && s.lastWrite.Load() < idle {
			s.enqueue(heartbeatFrame, h.opts.MaxQueue)
		}
	}
	h.mu.RUnlock()
	for _, s := range expired {
		h.closeWith(s, []byte("event: error\ndata: {\"error\":\"token expired\",\"status\":401}\n\n"))
	}
}

// closeWithRetry ends a stream after telling the client to come back after
// a jittered delay, so a fleet spreads over the other nodes.
func (h *Hub) closeWithRetry(s *subscriber) {
	h.closeWith(s, retryFrame(h.jitteredRetry()))
}

func (h *Hub) closeWith(s *subscriber, data []byte) {
	s.mu.Lock()
	closing := s.closing
	s.closing = true
	s.mu.Unlock()
	if closing {
		return
	}
	if !s.enqueue(&frame{data: data, last: true}, h.opts.MaxQueue+1) {
		h.remove(s, "closed")
	}
}

// jitteredRetry is Retry plus up to 100% of it at random.
func (h *Hub) jitteredRetry() time.Duration {
	return h.opts.Retry + rand.N(h.opts.Retry+1)
}

// drain stops taking new streams and closes the existing ones evenly over
// window, each with a jittered retry hint. It returns when all are closed
// or ctx ends.
func (h *Hub) drain(ctx context.Context, window time.Duration) {
	h.mu.Lock()
	h.draining = true
	total := len(h.all)
	h.mu.Unlock()
	if total == 0 {
		return
	}
	// Close per streams every interval: one at a time spread over the
	// whole window when there are few, in batches every tick when many.
	interval := max(housekeeperTick, window/time.Duration(total))
	steps := max(1, int(window/interval))
	per := max(1, (total+steps-1)/steps)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		h.mu.RLock()
		var batch []*subscriber
		for _, s := range h.all {
			if len(batch) == per {
				break
			}
			s.mu.Lock()
			if !s.closing {
				batch = append(batch, s)
			}
			s.mu.Unlock()
		}
		left := len(h.all)
		h.mu.RUnlock()
		if left == 0 {
			return
		}
		for _, s := range batch {
			h.closeWithRetry(s)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// isDraining reports whether drain has begun.
func (h *Hub) isDraining() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.draining
}

// closeAll closes every remaining stream at shutdown.
func (h *Hub) closeAll() {
	h.mu.RLock()
	subs := append([]*subscriber(nil), h.all...)
	h.mu.RUnlock()
	for _, s := range subs {
		h.remove(s, "closed")
	}
}

// count returns the number of connected subscribers.
func (h *Hub) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.all)
}

// sharedFilter is one filter used by every subscriber asking for the same
// repos and refs: thousands of dashboards on one repo keep one parsed copy
// (memory per idle stream), and the hub matches a ref once for a run of
// them.
type sharedFilter struct {
	f    bus.Filter
	key  string
	subs int // guarded by hub.mu
	// stamp is the hub's matchStamp of the event match is for; both are
	// guarded by hub.mu.
	stamp uint64
	match bool
}

// filterKey is a filter's canonical form. Pattern strings cannot contain
// NUL or newline (they are validated ref and repo names).
func filterKey(f *bus.Filter) string {
	var b strings.Builder
	for _, p := range f.Repos {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	b.WriteByte(0)
	for _, p := range f.Include {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	b.WriteByte(0)
	for _, p := range f.Exclude {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// intern makes s use the shared copy of its filter. Called with h.mu held.
func (h *Hub) intern(s *subscriber) {
	key := filterKey(&s.filter)
	sf := h.filters[key]
	if sf == nil {
		sf = &sharedFilter{f: s.filter, key: key}
		h.filters[key] = sf
	}
	sf.subs++
	s.filter, s.shared = sf.f, sf
}

// release drops s's use of its shared filter. Called with h.mu held.
func (h *Hub) release(s *subscriber) {
	sf := s.shared
	if sf == nil {
		return
	}
	if sf.subs--; sf.subs == 0 {
		delete(h.filters, sf.key)
	}
}
