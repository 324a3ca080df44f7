// Package fanout is a node's fan-out engine: it follows the bus, keeps the
// node's position, encodes each event once and queues it to every stream
// whose filter matches, and writes the queues to the streams' sockets with
// a small writer pool, batching busy ones; it sends heartbeats, parks and
// evicts slow clients, and drains. Handlers reach it only through its
// verbs: Register (a Stream), Watch (a long-poll Waiter), Position, Epoch,
// Drain, Count.
//
// It is not an HTTP server: it knows nothing about routing, request
// validation, credentials or echo, and does not read the history (a
// resuming client's replay is the handler's, written before GoLive). It
// takes a hijacked net.Conn, or writes through an http.ResponseWriter for
// the handler path.
package fanout

import (
	"context"
	"errors"
	"github.com/refcast/refcast/wire"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/refcast/refcast/bus"
)

// Engine is a node's fan-out engine. One goroutine reads the bus feed and, for
// each event, encodes one frame and queues it for the subscribers whose
// filter matches, found through an index by repo so the cost of an event is
// proportional to the subscribers it concerns. A small pool of writer
// goroutines drains the queues of hijacked connections; a housekeeper on
// one shared ticker sends heartbeats (spread over the interval), retries
// stalled writes, closes expired streams and carries out a drain.
//
// The engine never blocks on a client: a full queue evicts the subscriber
// (it resumes from its cursor) or, in mode=latest, coalesces by ref.
//
// Every exported method is safe for concurrent use. Nothing outside the
// package touches its fields or its locks: handlers register a Stream or a
// Waiter and use their methods.
type Engine struct {
	bus     bus.Bus          // set at construction
	opts    Options          // set at construction, defaults applied
	log     *slog.Logger     // set at construction
	metrics Metrics          // set at construction, nil fields filled
	ready   chan *subscriber // subscribers with frames to write; capacity MaxConnections+1
	retry   chan *subscriber // stalled subscribers to retry, on their own writers; capacity MaxConnections+1

	mu      sync.RWMutex
	started bool        // guarded by mu: pos and heads are valid
	pos     wire.Cursor // guarded by mu: position after the last dispatched event
	// heads: guarded by mu: epochs per partition, and the Seq and chain
	// of the last event dispatched (queueEvent), where a resubscription
	// starts (startPosition).
	heads   bus.Heads
	exact   map[string]map[*subscriber]struct{} // guarded by mu: repo -> subscribers naming it exactly
	globs   map[*subscriber]struct{}            // guarded by mu: subscribers with a repo glob
	all     []*subscriber                       // guarded by mu: every subscriber, for the housekeeper
	filters map[string]*sharedFilter            // guarded by mu: interned filters by canonical form
	// matchStamp numbers events for sharedFilter's remembered match;
	// guarded by mu.
	matchStamp uint64
	perKey     map[string]int // guarded by mu: connections per client key
	draining   bool           // guarded by mu

	// queued is the bytes streams hold in frames (see hold); bounded by
	// Options.MaxQueuedBytes.
	queued atomic.Int64

	stallMu sync.Mutex
	stalled map[*subscriber]time.Time // guarded by stallMu: when to retry
	// flowing are the stalled streams that were taking bytes fast, due
	// for a retry after flowRetry rather than at the next tick (also in
	// stalled, which they leave when retried or removed); guarded by
	// stallMu. flowBell (capacity 1) wakes the housekeeper to arm it.
	flowing  []*subscriber
	flowBell chan struct{}

	hbNext int // housekeeper's round-robin position; owned by the housekeeper
	// toSchedule are subscribers with frames queued by the bus reader and
	// not yet handed to a writer; owned by the bus reader.
	toSchedule []*subscriber
	health     feedHealth // owned by the bus reader

	laterMu sync.Mutex
	later   []*subscriber // guarded by laterMu: busy subscribers waiting for BatchDelay
	// heldBack counts hand-offs set aside for BatchDelay (guarded by
	// laterMu): what tests check instead of timing deliveries.
	heldBack int
	// laterSpare is later's previous array, reused so batching allocates
	// nothing in steady state; guarded by laterMu.
	laterSpare []*subscriber
	// laterBell wakes the batcher when later stops being empty; capacity 1.
	laterBell chan struct{}

	// globCh feeds the glob stage (globstage.go); nil when Run has not
	// started it, and then the bus reader matches glob streams itself.
	globCh chan globWork
	// runCtx is Run's context, for the bus reader's waits on the glob
	// stage; set by Run before the bus reader starts.
	runCtx context.Context
	// globVersion counts changes to globs, so the glob stage knows when its
	// copy of them is stale.
	globVersion atomic.Uint64
	// globStamp numbers events for sharedFilter's glob match; owned by
	// the glob stage.
	globStamp uint64
	// inlineGlobs is the bus reader's copy of globs when there is no glob
	// stage; owned by the bus reader.
	inlineGlobs globView
	// shedMu: one shed at a time (the bus reader and the glob stage both
	// check the memory bound).
	shedMu sync.Mutex
	// shedCands is shed's array of candidates, reused; guarded by shedMu.
	shedCands []holding
	// shedIdleUntil: unix nanoseconds before which no shed runs, set by
	// one that found no stream to evict (shedDue).
	shedIdleUntil atomic.Int64
}

// New builds an engine that follows b; Run starts it. Zero fields of opts
// take the defaults (see Options), a nil Logger discards, and nil Metrics
// fields count nothing.
func New(b bus.Bus, opts Options) *Engine {
	opts = opts.withDefaults()
	return &Engine{
		bus:     b,
		opts:    opts,
		log:     opts.Logger,
		metrics: opts.Metrics.withDefaults(),
		ready:   make(chan *subscriber, opts.MaxConnections+1),
		retry:   make(chan *subscriber, opts.MaxConnections+1),
		exact:   make(map[string]map[*subscriber]struct{}),
		globs:   make(map[*subscriber]struct{}),
		filters: make(map[string]*sharedFilter),
		perKey:  make(map[string]int),
		stalled: make(map[*subscriber]time.Time),

		laterBell: make(chan struct{}, 1),
		flowBell:  make(chan struct{}, 1),
	}
}

// Run owns the engine's goroutines: the bus reader, the writer pool, the
// batcher and the housekeeper. It returns when ctx is done, or with the
// bus's error (bus.ErrClosed) when the bus is closed under it; in both
// cases only after every one of them has exited and every remaining stream
// was closed (without a retry hint: use Drain before for that). A feed
// that fails otherwise is resubscribed from the engine's position, with a
// backoff of 50 ms doubling to 5 s. Call Run once. Streams registered after
// it returned are never written to: stop the handlers first.
func (e *Engine) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range e.opts.Writers {
		wg.Go(func() { e.writer(ctx, e.ready) })
	}
	// Retries of stalled sockets may each wait StallTimeout; they have
	// their own writers so a crowd of stuck clients cannot delay the others.
	for range max(1, e.opts.Writers/2) {
		wg.Go(func() { e.writer(ctx, e.retry) })
	}
	wg.Go(func() { e.housekeeper(ctx) })
	e.runCtx = ctx
	e.globCh = make(chan globWork, globQueue)
	wg.Go(func() { e.globStage(ctx) })
	if e.opts.BatchDelay > 0 {
		wg.Go(func() { e.batcher(ctx) })
	}
	err := e.read(ctx)
	cancel() // read returns early only when the bus is closed: stop the rest too
	wg.Wait()
	e.closeAll()
	return err
}

// read follows the bus from its current heads, resubscribing from the
// engine's position if the feed ends while ctx is alive.
func (e *Engine) read(ctx context.Context) error {
	e.feedStart(time.Now())
	defer func() { e.feedStop(time.Now()) }()
	backoff := 50 * time.Millisecond
	failures := 0 // consecutive, so an outage logs one warning, not one per retry
	for ctx.Err() == nil {
		from, err := e.startPosition(ctx)
		if err == nil {
			var sub bus.Subscription
			sub, err = e.bus.Subscribe(ctx, from)
			if err == nil {
				if failures > 0 { // one line back for the one line down
					e.log.Info("bus feed back", "after_errors", failures)
					failures = 0
				}
				backoff = 50 * time.Millisecond
				e.feedSubscribed(true, time.Now())
				e.follow(ctx, sub)
				_ = sub.Close()
				e.feedSubscribed(false, time.Now())
				if ctx.Err() != nil {
					return nil
				}
				err = errors.New("bus feed ended")
			}
		}
		if errors.Is(err, bus.ErrClosed) {
			return err
		}
		failures++
		lvl := slog.LevelWarn // the first of a run of errors; the retries are debug
		if failures > 1 {
			lvl = slog.LevelDebug
		}
		e.log.Log(ctx, lvl, "bus feed unavailable, retrying", "err", err, "backoff", backoff)
		e.metrics.BusReconnects.Inc()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// startPosition is the bus's heads on first start, and the engine's own
// position after that, so a resubscription misses nothing.
func (e *Engine) startPosition(ctx context.Context) (bus.Heads, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		// The chain with the Seq: with the chain of the heads at start
		// (0 on an empty bus) the Redis tailer took a rewound history's
		// entry at that Seq as its baseline after a failover, and the
		// live streams got the new pushes past the lost ones without a
		// reset (TestRewindSentinelFailover, once in about 25 runs).
		return append(bus.Heads(nil), e.heads...), nil
	}
	heads, err := e.bus.Heads(ctx)
	if err != nil {
		return nil, err
	}
	e.heads = heads
	e.pos = wire.At(heads)
	e.started = true
	return append(bus.Heads(nil), heads...), nil
}

func (e *Engine) follow(ctx context.Context, sub bus.Subscription) {
	var msgs []bus.Message
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-sub.C():
			if !ok {
				return
			}
			// The fan-out latency is measured from here: the engine's
			// read of the batch (its first message) from the feed.
			read := time.Now()
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
				if e.feedMessage(&msgs[i], read) {
					e.handle(msgs[i], i == len(msgs)-1, read)
				}
			}
			clear(msgs)
			e.flushScheduled()
			if !open {
				return
			}
		}
	}
}

// reset handles a partition whose history was lost: the engine moves to the
// new epoch (or, after a rewind that kept the epoch, to the head and its
// chain) and closes every stream with a retry hint; clients reconnect with
// their cursor, which no longer fits (another epoch, or a check that is
// not the history's chain at its Seq), and receive a reset event with the
// current snapshot.
func (e *Engine) reset(msg bus.Message) {
	e.log.Warn("bus history lost, clients will resync", "partition", msg.Partition, "epoch", msg.Head.Epoch)
	e.metrics.Resets.Inc()
	e.mu.Lock()
	e.heads[msg.Partition] = msg.Head
	e.moveTo(msg.Partition, msg.Head.Last, msg.Head.Chain)
	e.pos.Epoch = wire.EpochFingerprint(e.heads)
	subs := append([]*subscriber(nil), e.all...)
	e.mu.Unlock()
	for _, s := range subs {
		e.closeWithRetry(s)
	}
}

// moveTo sets partition p's position to seq and chain, in pos (what
// clients' cursors compare with) and in heads (where a resubscription
// starts), which must not disagree. Called with e.mu held.
func (e *Engine) moveTo(p int, seq, chain uint64) {
	e.pos.Set(p, seq, chain)
	e.heads[p].Last, e.heads[p].Chain = seq, chain
}

// Position returns a copy of the engine's position: after the last event
// it dispatched, so the cursor of a client that is up to date. ok is false
// until the engine has read the bus's heads once (Run started and the bus
// answered). Safe for concurrent use; the wire.Cursor is the caller's.
func (e *Engine) Position() (pos wire.Cursor, ok bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if !e.started {
		return wire.Cursor{}, false
	}
	return e.pos.Clone(), true
}

// Epoch returns the epoch the engine follows for a partition (0 before the
// engine has read the bus): what a history read for a replay must ask for,
// so the replay and the live frames come from the same life of the
// partition. Safe for concurrent use.
func (e *Engine) Epoch(partition int) uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if partition < 0 || partition >= len(e.heads) {
		return 0
	}
	return e.heads[partition].Epoch
}

// Errors from Register and Watch: the node cannot take the stream now;
// the client should retry, here or on another node (the server answers
// 503 with Retry-After).
var (
	ErrTooManyConnections = errors.New("too many connections on this node")
	ErrTooManyForClient   = errors.New("too many connections from this client")
	ErrDraining           = errors.New("node is draining")
	ErrNotReady           = errors.New("node is not connected to the bus yet")
)

// Reasons a stream ends, the label of the evictions metric for the ones
// the engine decides (all but ReasonClosed and ReasonClientGone, which
// are not counted).
const (
	ReasonClosed     = "closed"      // ended normally: drained, expired, shut down, or done
	ReasonClientGone = "client_gone" // the client went away (handler path)
	ReasonWriteError = "write_error" // a write failed
	ReasonQueueFull  = "queue_full"  // fell behind by more than MaxQueue
	ReasonSlowClient = "slow_client" // its socket stayed full for WriteTimeout
	// ReasonMemory (memory.go): it held the most when the node's queued
	// bytes passed MaxQueuedBytes.
)

// register adds a subscriber and returns the position from which it will
// receive live frames: every event after it is queued to s, none before.
func (e *Engine) register(s *subscriber) (wire.Cursor, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case !e.started:
		return wire.Cursor{}, ErrNotReady
	case e.draining:
		return wire.Cursor{}, ErrDraining
	case len(e.all) >= e.opts.MaxConnections:
		e.metrics.Rejected("node_limit").Inc()
		return wire.Cursor{}, ErrTooManyConnections
	case s.client != "" && e.perClientLimit(s) > 0 && e.perKey[s.client] >= e.perClientLimit(s):
		e.metrics.Rejected("client_limit").Inc()
		return wire.Cursor{}, ErrTooManyForClient
	}
	e.index(s)
	if _, glob := e.globs[s]; glob {
		s.fromSeqs, s.fromEpoch = append([]uint64(nil), e.pos.Seqs...), e.pos.Epoch
	}
	s.idx = len(e.all)
	e.all = append(e.all, s)
	if s.client != "" {
		e.perKey[s.client]++
	}
	s.lastWrite.Store(time.Now().UnixNano())
	e.metrics.Connections.Set(float64(len(e.all)))
	return e.pos.Clone(), nil
}

// perClientLimit is the streams s's client key may hold: MaxPerClient, or
// for an anonymous client MaxPerAnonymous if that is stricter; 0 is
// unlimited.
func (e *Engine) perClientLimit(s *subscriber) int {
	limit := e.opts.MaxPerClient
	if a := e.opts.MaxPerAnonymous; s.anonymous && a > 0 && (limit == 0 || a < limit) {
		limit = a
	}
	return limit
}

// remove unregisters and closes a subscriber. Safe to call more than once
// and from any goroutine but one holding e.mu.
func (e *Engine) remove(s *subscriber, reason string) {
	e.mu.Lock()
	if s.idx < 0 || s.idx >= len(e.all) || e.all[s.idx] != s {
		e.mu.Unlock()
		s.markClosed()
		return
	}
	last := len(e.all) - 1
	e.all[s.idx] = e.all[last]
	e.all[s.idx].idx = s.idx
	e.all[last] = nil
	e.all = e.all[:last]
	s.idx = -1
	e.unindex(s)
	if s.client != "" {
		if e.perKey[s.client]--; e.perKey[s.client] <= 0 {
			delete(e.perKey, s.client)
		}
	}
	e.metrics.Connections.Set(float64(len(e.all)))
	e.mu.Unlock()

	e.stallMu.Lock()
	_, parked := e.stalled[s]
	delete(e.stalled, s)
	e.stallMu.Unlock()
	if reason != ReasonClosed && reason != ReasonClientGone {
		s.abortOnClose()
	}
	s.markClosed()
	if parked {
		// A parked stream holds scheduled with no writer on it: taking it
		// out of stalled made it ours, so its unwritten frames are ours to
		// let go.
		s.dropWriting()
	}
	if reason != ReasonClosed && reason != ReasonClientGone {
		e.metrics.Evictions(reason).Inc()
	}
	e.log.Debug("stream closed", "reason", reason, "client", s.client)
}

// closeAll closes every remaining stream at shutdown.
func (e *Engine) closeAll() {
	e.mu.RLock()
	subs := append([]*subscriber(nil), e.all...)
	e.mu.RUnlock()
	for _, s := range subs {
		e.remove(s, ReasonClosed)
	}
}

// Count returns the number of registered streams and long-polls. Safe for
// concurrent use.
func (e *Engine) Count() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.all)
}
