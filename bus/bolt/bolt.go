// Package bolt is refcast's embedded bus kept on disk: the default for a
// single node without Redis. One bbolt file in a data directory holds each
// partition's bounded history, epoch and head, the ref state of every repo
// and the recent push ids, so a restarted node keeps its positions: clients
// resume with Last-Event-ID and snapshots answer as before.
//
// Every Publish is appended to a write-ahead log (wal.go, bus.wal beside
// the bbolt file) and fsynced before it returns and before any reader or
// subscriber can see it; the logged pushes are written to bbolt in batches
// (flushes). Reads go to the file (bbolt's memory map) and to the tail of
// logged pushes not yet flushed, kept in memory; there too live the
// partitions' heads, a wake-up channel, the push id window (looked up by
// every publish) and the events of the last commit (for caught-up feeds).
//
// It is not shared between processes: bbolt's file lock admits one node per
// data directory (hooks reach the node over HTTP), and a tier of several
// nodes needs bus/redis.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/refcast/refcast/bus"
)

// Defaults for Options.
const (
	DefaultPushIDs   = 100000 // push ids remembered for idempotency
	DefaultFeedBatch = 256    // events per subscription message at most
	// DefaultLockTimeout is how long Open waits for the data file's lock
	// before reporting that another process holds it.
	DefaultLockTimeout = time.Second
	// FileName is the bbolt file inside the data directory.
	FileName = "bus.db"
)

// Options configure a Bus. Zero values take the defaults above.
type Options struct {
	// Partitions is the number of partitions (bus.DefaultPartitions). It is
	// fixed when the data directory is created; opening it with another
	// number fails.
	Partitions int
	// History is the most events kept per partition (bus.DefaultHistory).
	// Lowering it trims on the next Open.
	History int
	// MaxAge also trims events published longer ago than this (by the
	// node's clock at publish, not the push's own time, so a replayed spool
	// is not trimmed on arrival); 0 trims by count only.
	MaxAge time.Duration
	// PushIDs is how many push ids are remembered for idempotency: at
	// least that many, and up to 1/16 more (at most 1,024) between trims.
	PushIDs int
	// LockTimeout bounds the wait for the data file's lock
	// (DefaultLockTimeout).
	LockTimeout time.Duration
	// Now is the clock, for tests; time.Now when nil.
	Now func() time.Time
	// Logger says when the log fails and when it works again (publishes
	// go to the file directly meanwhile); slog.Default() when nil.
	Logger *slog.Logger

	// noSync skips fsync, for the benchmark comparing the cost of it only.
	noSync bool
	// flushPushes and logSize replace flushPushes and walSize, for tests
	// that make flushes happen often.
	flushPushes int
	logSize     int64
	// flushErr makes every flush fail with it, for tests: rolled back,
	// or, with flushLands, after the commit reached the file (as when the
	// meta page's fdatasync fails).
	flushErr   error
	flushLands bool
}

// ErrLocked is returned by Open when another process holds the data
// directory (another node, or a stale one still running).
var ErrLocked = errors.New("data directory is in use by another process")

// ErrCorrupt is returned by Open when the data file cannot be read as a
// refcast bus: damaged, truncated, or not ours.
var ErrCorrupt = errors.New("data file is unreadable")

// Bus is a bus.Bus kept in a bbolt file.
type Bus struct {
	opts Options // set at construction
	db   *bolt.DB
	path string // the bbolt file; set at construction

	// wmu serialises commits, so a partition's head in heads moves in
	// commit order.
	wmu sync.Mutex
	// pushes is the push id window as of the last commit (the file's
	// pushorder bucket, read at Open, and the tail's), guarded by wmu:
	// ~100 B per id, ~10 MB at the default 100,000.
	pushes map[string]pushPos
	// lastOrder is the window's newest place (the last assigned) and
	// firstOrder its oldest, guarded by wmu.
	lastOrder, firstOrder uint64
	w                     *wal // guarded by wmu
	// replayed is how many pushes Open wrote from the log to the file;
	// unmatched, the generation of a log Open did not replay because it
	// is later than the file's next (see laterGeneration). Set by Open.
	replayed  int
	unmatched uint64
	// stopped is set by a flush whose commit failed in a way that may
	// have reached the file anyway (see flush): every later publish fails
	// with it until a restart, and a read waiting for the file to match
	// memory gives up. Written with wmu and mu held, read under either.
	stopped error

	pmu     sync.Mutex // guards pending
	pending []*pubReq  // publishes waiting for the next commit

	mu sync.Mutex // guards heads, notify, closed
	// heads are the partitions' heads as of the last acknowledged commit:
	// the visibility watermark. Readers never return events past it, so
	// nothing is seen before its commit was fsynced.
	heads bus.Heads
	// recent are, per partition, the events the last commit appended to
	// it (nil when it appended none), so a feed that is caught up takes
	// them from memory instead of a read transaction and a JSON decode of
	// each (~3 % of a node's CPU per event in the spread scenario).
	// Replaced, never modified.
	recent []recentEvents
	// tail are the logged pushes not yet flushed to bbolt, in commit
	// order: per partition, the events after applied[pi] up to the head.
	// Appended to in place (a reader's copy is a prefix); replaced by a
	// flush.
	tail    []*entry
	applied []uint64      // per partition, the last Seq in the bbolt file
	notify  chan struct{} // closed and replaced after every publish
	closed  bool
	done    chan struct{}  // closed by Close
	subs    sync.WaitGroup // subscription goroutines; waited for by Close
}

var _ bus.Bus = (*Bus)(nil)

// Open opens (creating if needed) the bus kept in dir. A fresh directory
// gets a random epoch per partition; an existing one keeps its epochs,
// history, ref state and push ids, and its Seqs continue.
func Open(dir string, opts Options) (*Bus, error) {
	if opts.Partitions == 0 {
		opts.Partitions = bus.DefaultPartitions
	}
	if err := bus.CheckPartitions(opts.Partitions); err != nil {
		return nil, fmt.Errorf("bolt bus: %w", err)
	}
	if opts.History == 0 {
		opts.History = bus.DefaultHistory
	}
	if opts.History < 1 {
		return nil, fmt.Errorf("bolt bus: history must be positive, got %d", opts.History)
	}
	if opts.PushIDs == 0 {
		opts.PushIDs = DefaultPushIDs
	}
	if opts.PushIDs < 1 {
		return nil, fmt.Errorf("bolt bus: push ids must be positive, got %d", opts.PushIDs)
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.flushPushes <= 0 {
		opts.flushPushes = flushPushes
	}
	if opts.logSize <= 0 {
		opts.logSize = walSize
	}
	if dir == "" {
		return nil, errors.New("bolt bus: no data directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open bus data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	if err := checkSize(path); err != nil {
		return nil, err
	}
	var db *bolt.DB
	err := guard(path, func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout: opts.LockTimeout,
			// The hashmap freelist stays fast as the file fragments:
			// history is a queue, every publish frees the pages of trimmed
			// events. The freelist is synced (NoFreelistSync false): it
			// costs a page in the same fsync, and spares Open a scan of
			// the whole file in a goroutine of bbolt's, where damage would
			// crash the process instead of failing Open.
			FreelistType: bolt.FreelistMapType,
			NoSync:       opts.noSync,
		})
		return err
	})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, openError(path, err, opts.LockTimeout)
	}
	w, err := openWAL(dir, opts.logSize, opts.noSync)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	b := &Bus{opts: opts, db: db, path: path, w: w, notify: make(chan struct{}), done: make(chan struct{})}
	if err := guard(path, b.load); err != nil {
		_ = w.f.Close()
		_ = db.Close()
		return nil, err
	}
	return b, nil
}

// openError explains why bbolt could not open the file.
func openError(path string, err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open bus %s: %w (lock not released within %v; is another refcast serve using this --data directory?)", path, ErrLocked, timeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch),
		errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrInvalidMapping):
		return fmt.Errorf("open bus %s: %w: %v (move it aside to start with an empty history)", path, ErrCorrupt, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("open bus %s: %w", path, err)
	}
	return fmt.Errorf("open bus %s: %w", path, err)
}

// load checks the file's format, creates what a fresh file lacks, writes
// the pushes the log holds beyond it, trims to the current bounds and
// reads the heads. Run under guard: bbolt panics on some damaged pages.
func (b *Bus) load() error {
	heads := make(bus.Heads, b.opts.Partitions)
	var pushes map[string]pushPos
	var gen uint64
	err := b.db.Update(func(tx *bolt.Tx) error {
		if err := initLayout(tx, b.opts.Partitions); err != nil {
			return err
		}
		var err error
		if gen, err = walGen(tx); err != nil {
			return err
		}
		entries, err := readRecords(b.w.f, b.w.size, gen+1)
		if err != nil {
			return err
		}
		b.replayed = len(entries)
		if len(entries) == 0 {
			b.unmatched = laterGeneration(b.w.f, b.w.size, gen+1)
		} else {
			gen++
			for _, e := range entries {
				if e.pi < 0 || e.pi >= b.opts.Partitions {
					return logError{fmt.Errorf("logged push %s is in partition %d of %d", e.p.ID, e.pi, b.opts.Partitions)}
				}
			}
			// Trimmed to the bounds below, with the rest.
			if _, err := applyEntries(tx, entries, gen, b.opts.PushIDs, func(*partition) error { return nil }); err != nil {
				return err
			}
		}
		now := b.opts.Now()
		for pi := range heads {
			p, err := openPartition(tx, pi)
			if err != nil {
				return err
			}
			if err := p.trim(b.opts.History, b.opts.MaxAge, now); err != nil {
				return err
			}
			heads[pi] = p.head
		}
		if _, err := trimPushIDs(tx, b.opts.PushIDs, 0); err != nil {
			return err
		}
		if pushes, err = loadPushes(tx); err != nil {
			return err
		}
		b.firstOrder, b.lastOrder = windowBounds(tx)
		// Walk what readers will walk, so damage shows now and not in a
		// request.
		return checkReadable(tx)
	})
	if err != nil {
		var fe formatError
		if errors.As(err, &fe) {
			return fmt.Errorf("open bus %s: %w", b.path, err)
		}
		var le logError
		if errors.As(err, &le) {
			return fmt.Errorf("open bus %s: %w: its log %s cannot be replayed: %v (move the log aside to open the file without the pushes it holds)",
				b.path, ErrCorrupt, b.w.f.Name(), le.err)
		}
		return fmt.Errorf("open bus %s: %w: %v (move it aside to start with an empty history)", b.path, ErrCorrupt, err)
	}
	b.heads, b.pushes, b.recent = heads, pushes, make([]recentEvents, len(heads))
	b.applied = make([]uint64, len(heads))
	for pi, h := range heads {
		b.applied[pi] = h.Last
	}
	b.w.gen = gen + 1
	return nil
}

// recentEvents are the events one commit appended to a partition: Seqs
// last-len(evs)+1 .. last of epoch.
type recentEvents struct {
	epoch, last uint64
	evs         []bus.Event
}

// Path is the bbolt file the bus keeps its state in.
func (b *Bus) Path() string { return b.path }

// Partitions implements bus.Bus.
func (b *Bus) Partitions() int { return b.opts.Partitions }

// Close implements bus.Bus: subscriptions end, then the file is closed and
// its lock released. Safe to call twice.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.done)
	b.mu.Unlock()
	b.subs.Wait()
	b.wmu.Lock() // let an in-flight publish finish its commit
	defer b.wmu.Unlock()
	var ferr error
	if (len(b.tail) > 0 || b.w.failing) && b.stopped == nil {
		// So the next Open has nothing to replay; if this fails, it will.
		// After a failed append whose publish could not be committed
		// either, the log may hold that record with nothing after it:
		// flushing moves the file past its generation, so that a
		// publish reported failed does not come back at the next Open.
		ferr = b.flush(nil, nil)
	}
	werr := b.w.f.Close()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close bus %s: %w", b.path, err)
	}
	if ferr != nil {
		return fmt.Errorf("close bus %s: the log keeps what was not flushed: %w", b.path, ferr)
	}
	if b.stopped != nil {
		return fmt.Errorf("close bus %s: the log keeps what the file may lack: %w", b.path, b.stopped)
	}
	if werr != nil {
		return fmt.Errorf("close bus log: %w", werr)
	}
	return nil
}

// Replayed is how many pushes Open took from the log that the file lacked:
// those acknowledged before a crash (or a kill) and not yet flushed.
func (b *Bus) Replayed() int { return b.replayed }

// UnmatchedLog is the generation of the log's records when Open replayed
// none because they are of a later generation than the file expects, and
// the generation it expected; 0, 0 otherwise. The file then lost a flush
// or was restored without its log: pushes in the log may be missing from
// the file.
func (b *Bus) UnmatchedLog() (logGen, fileNext uint64) {
	if b.unmatched == 0 {
		return 0, 0
	}
	return b.unmatched, b.w.gen
}

// Ping implements bus.HealthChecker: an error once a failed write to the
// file stopped publishing (see flush), so /readyz says the node needs a
// restart.
func (b *Bus) Ping(ctx context.Context) error {
	s, err := b.state()
	if err != nil {
		return err
	}
	return s.stopped
}

var _ bus.HealthChecker = (*Bus)(nil)

// state is what a read is made against: the watermark heads, where the
// file ends per partition, the tail, and the current wake-up channel.
type state struct {
	heads   bus.Heads
	applied []uint64
	tail    []*entry
	wake    <-chan struct{}
	stopped error // Bus.stopped
}

// waitNewer waits for a newer state, after a read found the file ahead of
// s (a publish is between its commit and its return): until that publish
// wakes readers, or ctx ends. A stopped bus has none to wait for: its stop
// is the answer.
func (s state) waitNewer(ctx context.Context) error {
	if s.stopped != nil {
		return s.stopped
	}
	select {
	case <-s.wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// state returns the current state. A read takes it before it opens a
// transaction: a flush writes the file before it empties the tail, so
// whatever the transaction sees, the file holds every event up to
// applied and the tail every event after it.
func (b *Bus) state() (state, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return state{}, bus.ErrClosed
	}
	return state{heads: slices.Clone(b.heads), applied: slices.Clone(b.applied), tail: b.tail, wake: b.notify, stopped: b.stopped}, nil
}

// view runs a read transaction, mapping bbolt's errors to the bus's.
func (b *Bus) view(ctx context.Context, what string, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := b.db.View(fn)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return bus.ErrClosed
	case errors.Is(err, bus.ErrTruncated), errors.Is(err, bus.ErrInvalid), errors.Is(err, bus.ErrClosed):
		return err
	}
	return fmt.Errorf("%s in %s: %w: %w", what, b.path, bus.ErrUnavailable, err)
}
