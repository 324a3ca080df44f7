package watch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// Defaults for Config.
const (
	DefaultParallel   = 4
	DefaultRetries    = 5
	DefaultRetryBase  = time.Second
	DefaultRetryMax   = time.Minute
	DefaultGrace      = 10 * time.Second
	DefaultMaxPending = 100_000
	// MaxBatch is the most events one run gets; a longer burst is split.
	MaxBatch = bus.MaxUpdatesPerPush
)

// Source delivers frames to a handler until ctx is done or it fails;
// *Client is one.
type Source interface {
	Run(ctx context.Context, handle Handler) error
}

// Config configures a Watcher. Zero values take the defaults above.
type Config struct {
	// Out gets one line per event: FormatEvent, or with JSON the event's
	// JSON as received. Nil prints nothing. Written only by the reading
	// goroutine.
	Out  io.Writer
	JSON bool

	// Runner, when set, is run per event (per repo and debounce window
	// with Debounce > 0) and per reset.
	Runner Runner
	// Debounce coalesces a repo's events arriving within this window of
	// its first one into one run, with a JSON array on stdin.
	Debounce time.Duration
	// Parallel bounds runs of different repos at the same time. Runs of one
	// repo never overlap.
	Parallel int
	// Retries is how often a failed run is retried (exponential backoff
	// from RetryBase to RetryMax, with jitter). Negative means none.
	Retries   int
	RetryBase time.Duration
	RetryMax  time.Duration
	// SkipFailed moves on past a batch whose retries are exhausted (its
	// cursor is stored as handled). By default the Watcher stops with an
	// error instead, and the stored cursor stays before that batch.
	SkipFailed bool
	// Grace bounds the wait for running commands on shutdown; then they are
	// cancelled.
	Grace time.Duration

	// StatePath, when set, receives the cursor after each handled frame
	// (see tracker), written atomically. Writes are coalesced: a burst of
	// 500 handled events makes few writes, never one past an unhandled
	// event. The first write that fails stops Run with that error: a
	// watcher that cannot keep its position must not pretend to.
	StatePath string
	// Since is the cursor the stream starts from (the state file's).
	Since string

	MaxPending int
	Logger     *slog.Logger

	now func() time.Time // tests replace it
}

// Watcher turns frames into output, command runs and stored cursors. Create
// it with New and use it for one Run.
type Watcher struct {
	cfg   Config   // set at construction
	track *tracker // set at construction
	sem   chan struct{}

	runCtx    context.Context // commands' context, cancelled after Grace on shutdown
	runCancel context.CancelFunc
	fail      context.CancelCauseFunc // stops Run with an error; set by Run
	wg        sync.WaitGroup          // running batches

	mu       sync.Mutex
	cond     *sync.Cond            // signalled when a batch finishes or stopping is set
	queues   map[string]*repoQueue // repos with pending or running batches; guarded by mu
	stopping bool                  // guarded by mu
	stopCh   chan struct{}         // closed when stopping is set

	hinted bool // a hello's hint was logged; owned by the reading goroutine
}

// repoQueue is one repo's pending events. Guarded by Watcher.mu.
type repoQueue struct {
	pending []item
	running bool
	due     bool        // the debounce window of pending[0] has elapsed
	timer   *time.Timer // the running debounce window
}

type item struct {
	seq  uint64
	id   string
	ev   *bus.Event
	data []byte
}

// New returns a Watcher for cfg.
func New(cfg Config) *Watcher {
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.Retries == 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	w := &Watcher{
		cfg:    cfg,
		track:  newTracker(cfg.MaxPending, cfg.Since),
		sem:    make(chan struct{}, cfg.Parallel),
		queues: map[string]*repoQueue{},
		stopCh: make(chan struct{}),
	}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// Run reads src until ctx is done, src fails, or a batch fails for good
// (unless SkipFailed). Then it stops starting commands, waits up to Grace
// for running ones (cancelling them after), saves the state and returns.
// It returns nil when ctx is done.
func (w *Watcher) Run(parent context.Context, src Source) error {
	ctx, fail := context.WithCancelCause(parent)
	defer fail(nil)
	w.fail = fail
	w.runCtx, w.runCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer w.runCancel()
	stopWatch := context.AfterFunc(ctx, w.stop)
	defer stopWatch()

	saverDone := make(chan struct{})
	saverStop := make(chan struct{})
	var saveErr error // written by the saver goroutine, read after saverDone
	go func() {
		defer close(saverDone)
		saveErr = w.saver(saverStop)
	}()

	err := src.Run(ctx, w.handle)
	w.stop()

	// Wait for running commands, bounded.
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.Grace):
		w.cfg.Logger.Warn("commands still running after the grace period, cancelling them", "grace", w.cfg.Grace)
		w.runCancel()
		<-done
	}
	close(saverStop)
	<-saverDone

	if saveErr != nil {
		return saveErr // covers a save failing at stop, after the parent ended
	}
	if cause := context.Cause(ctx); cause != nil && parent.Err() == nil {
		return cause // a batch failed for good
	}
	if parent.Err() != nil && errors.Is(err, parent.Err()) {
		return nil
	}
	return err
}

// stop sets stopping: no batch starts after it, timers are stopped and
// waiters wake.
func (w *Watcher) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return
	}
	w.stopping = true
	close(w.stopCh)
	for _, q := range w.queues {
		if q.timer != nil {
			q.timer.Stop()
			q.timer = nil
		}
	}
	w.cond.Broadcast()
}

// saver stores the safe cursor whenever it changes, and once more at stop.
// The first failed write stops Run (through fail) and is returned: events
// handled after it would be redone by a restart, or, with no state file
// at all, skipped, and nobody would know.
func (w *Watcher) saver(stop <-chan struct{}) error {
	saved := w.cfg.Since
	save := func() error {
		c := w.track.safeCursor()
		if w.cfg.StatePath == "" || c == "" || c == saved {
			return nil
		}
		if err := SaveState(w.cfg.StatePath, c); err != nil {
			w.cfg.Logger.Error("cannot save state, stopping", "err", err)
			err = fmt.Errorf("%w: the watcher stopped because it cannot keep its position; fix the file's directory and restart (it resumes from the last saved cursor)", err)
			w.fail(err)
			return err
		}
		saved = c
		return nil
	}
	for {
		select {
		case <-w.track.changed:
			if err := save(); err != nil {
				return err
			}
		case <-stop:
			return save()
		}
	}
}

// handle is the Source's handler: it prints the frame, then records it
// and hands it to its repo's queue. It runs on the reading goroutine.
func (w *Watcher) handle(ctx context.Context, f Frame) error {
	switch f.Event {
	case wire.EventRef, wire.EventSync:
		var ev bus.Event
		if err := json.Unmarshal(f.Data, &ev); err != nil || ev.Repo == "" {
			w.cfg.Logger.Warn("ignoring a malformed event", "id", f.ID, "err", err)
			return w.skip(ctx, f.ID)
		}
		w.print(f.Data, func() string { return FormatEvent(&ev) })
		if w.cfg.Runner == nil {
			return w.skip(ctx, f.ID)
		}
		seq, err := w.track.add(ctx, f.ID)
		if err != nil {
			return err
		}
		w.enqueue(ev.Repo, item{seq: seq, id: f.ID, ev: &ev, data: f.Data})
		return nil
	case wire.EventReset:
		var r wire.Reset
		if err := json.Unmarshal(f.Data, &r); err != nil {
			w.cfg.Logger.Warn("ignoring a malformed reset", "id", f.ID, "err", err)
			return w.skip(ctx, f.ID)
		}
		w.print(f.Data, func() string { return FormatReset(&r, w.cfg.now()) })
		return w.reset(ctx, f, &r)
	default: // hello, and names this version does not know: a position only
		if f.Event == "hello" && !w.hinted {
			// The node explains a subscription that names repos it has no
			// refs for (a typo?): say it once, or the watch waits silently.
			var h struct{ Hint string }
			if json.Unmarshal(f.Data, &h) == nil && h.Hint != "" {
				w.hinted = true
				w.cfg.Logger.Warn("the node has no refs for a watched repo", "hint", h.Hint)
			}
		}
		return w.skip(ctx, f.ID)
	}
}

// skip records a frame that needs no command.
func (w *Watcher) skip(ctx context.Context, id string) error {
	seq, err := w.track.add(ctx, id)
	if err != nil {
		return err
	}
	w.track.done(seq)
	return nil
}

func (w *Watcher) print(data []byte, human func() string) {
	if w.cfg.Out == nil {
		return
	}
	var line []byte
	if w.cfg.JSON {
		var b bytes.Buffer
		if err := json.Compact(&b, data); err != nil {
			return
		}
		line = append(b.Bytes(), '\n')
	} else {
		line = []byte(human() + "\n")
	}
	if _, err := w.cfg.Out.Write(line); err != nil {
		w.cfg.Logger.Warn("cannot write output", "err", err)
	}
}

// enqueue adds an event to its repo's queue and starts a run when one is
// due. Without debounce every event is due at once (one run each, in
// order); with it, the first pending event opens a window.
func (w *Watcher) enqueue(repo string, it item) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.queues[repo]
	if q == nil {
		q = &repoQueue{}
		w.queues[repo] = q
	}
	q.pending = append(q.pending, it)
	if w.cfg.Debounce <= 0 || len(q.pending) >= MaxBatch {
		q.due = true
	} else if q.timer == nil && !q.due && !w.stopping {
		q.timer = time.AfterFunc(w.cfg.Debounce, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			q.timer = nil
			q.due = true
			w.kick(repo, q)
		})
	}
	w.kick(repo, q)
}

// kick starts q's next batch if it is due and nothing of q runs.
// w.mu is held.
func (w *Watcher) kick(repo string, q *repoQueue) {
	if w.stopping || q.running || !q.due || len(q.pending) == 0 {
		return
	}
	n := len(q.pending)
	if w.cfg.Debounce <= 0 {
		n = 1
	}
	n = min(n, MaxBatch)
	batch := q.pending[:n:n]
	q.pending = q.pending[n:]
	q.due = w.cfg.Debounce <= 0 || len(q.pending) >= MaxBatch
	if len(q.pending) > 0 && !q.due && q.timer == nil {
		q.timer = time.AfterFunc(w.cfg.Debounce, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			q.timer = nil
			q.due = true
			w.kick(repo, q)
		})
	}
	q.running = true
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		ok := w.runItems(repo, batch)
		w.mu.Lock()
		defer w.mu.Unlock()
		q.running = false
		if !ok {
			// Not handled (stopping): keep the events pending so the
			// stored cursor stays before them.
			q.pending = append(batch, q.pending...)
		}
		if len(q.pending) == 0 && q.timer == nil {
			delete(w.queues, repo)
		} else {
			w.kick(repo, q)
		}
		w.cond.Broadcast()
	}()
}

// runItems runs one batch of a repo and marks it handled. It returns false
// when the batch was left unhandled because the Watcher is stopping.
func (w *Watcher) runItems(repo string, items []item) bool {
	b := w.batch(repo, items)
	if !w.runBatch(b) {
		return false
	}
	seqs := make([]uint64, len(items))
	for i, it := range items {
		seqs[i] = it.seq
	}
	w.track.done(seqs...)
	return true
}

// batch builds the Batch for items of one repo.
func (w *Watcher) batch(repo string, items []item) *Batch {
	last := items[len(items)-1].ev
	b := &Batch{
		Repo: repo, Ref: last.Ref, Old: last.Old, New: last.New, Kind: string(last.Kind),
		Pusher: last.Pusher, Cursor: items[len(items)-1].id, Count: len(items),
	}
	if last.Forced != nil {
		b.Forced = fmt.Sprint(*last.Forced)
	}
	if w.cfg.Debounce <= 0 {
		b.Stdin = items[0].data
	} else {
		var buf bytes.Buffer
		buf.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := json.Compact(&buf, it.data); err != nil {
				buf.WriteString("null")
			}
		}
		buf.WriteByte(']')
		b.Stdin = buf.Bytes()
	}
	return b
}

// runBatch runs b with retries. It returns true when b is handled (it
// succeeded, or failed for good with SkipFailed), false when it is left
// unhandled: the Watcher is stopping, or it failed for good (then Run
// stops with the error).
func (w *Watcher) runBatch(b *Batch) bool {
	select {
	case w.sem <- struct{}{}:
	case <-w.stopCh:
		return false
	}
	defer func() { <-w.sem }()
	log := w.cfg.Logger.With("repo", b.Repo, "kind", b.Kind, "events", b.Count)
	attempts := 1 + max(w.cfg.Retries, 0)
	var err error
	for i := range attempts {
		if i > 0 {
			d := w.retryDelay(i)
			log.Warn("command failed, retrying", "err", err, "attempt", i, "of", attempts, "in", d.Round(time.Millisecond))
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-w.stopCh:
				t.Stop()
				return false
			}
		}
		if err = w.cfg.Runner.Run(w.runCtx, b); err == nil {
			return true
		}
		if w.runCtx.Err() != nil {
			return false
		}
	}
	if w.cfg.SkipFailed {
		log.Error("command failed, skipping its events", "err", err, "attempts", attempts, "cursor", b.Cursor)
		return true
	}
	log.Error("command failed, giving up", "err", err, "attempts", attempts)
	w.fail(fmt.Errorf("command for %s failed %d times, last: %w", b.Repo, attempts, err))
	w.stop()
	return false
}

// retryDelay is RetryBase doubled per attempt, capped at RetryMax, with
// the upper half jittered.
func (w *Watcher) retryDelay(attempt int) time.Duration {
	d := w.cfg.RetryBase
	for i := 1; i < attempt && d < w.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, w.cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
}

// reset handles a reset frame: it lets every queued event run first (they
// happened before the reset), then runs the command once with the
// snapshot, and only then records the reset's cursor as handled.
func (w *Watcher) reset(ctx context.Context, f Frame, r *wire.Reset) error {
	seq, err := w.track.add(ctx, f.ID)
	if err != nil {
		return err
	}
	if w.cfg.Runner == nil {
		w.track.done(seq)
		return nil
	}
	w.mu.Lock()
	for repo, q := range w.queues {
		if q.timer != nil {
			q.timer.Stop()
			q.timer = nil
		}
		q.due = true
		w.kick(repo, q)
	}
	for len(w.queues) > 0 && !w.stopping {
		w.cond.Wait()
	}
	stopping := w.stopping
	w.mu.Unlock()
	if stopping {
		return ctx.Err()
	}
	repos := make([]string, len(r.Repos))
	for i, s := range r.Repos {
		repos[i] = s.Repo
	}
	cursor := f.ID
	if cursor == "" {
		cursor = r.Cursor
	}
	b := &Batch{Repo: strings.Join(repos, " "), Kind: "reset", Cursor: cursor, Count: 1, Stdin: f.Data}
	w.wg.Add(1)
	defer w.wg.Done()
	if w.runBatch(b) {
		w.track.done(seq)
	}
	return nil
}
