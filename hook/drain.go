package hook

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/refcast/refcast/internal/flock"
)

// ErrDrainerRunning: another drainer holds the queue's lock.
var ErrDrainerRunning = errors.New("another 'refcast hook drain' already drains this queue")

// errQuarantine marks a handler error that retrying cannot fix: the file
// is moved to the queue's quarantine directory with the reason.
var errQuarantine = errors.New("not publishable")

// DrainOptions tune DrainQueue. Zero values take the defaults.
type DrainOptions struct {
	// Workers publish in parallel; one repository's pushes always go to
	// the same worker, in order. Default 4: enough to keep one slow
	// enrichment (budget 100 ms) from holding up other repositories, few
	// enough that a backlog does not flood a node.
	Workers int
	// Rescan is how often the queue is listed when nothing wakes the
	// drainer: the only trigger where inotify is missing, a safety net
	// where it is not. Default 1s (inotify), 100ms (elsewhere).
	Rescan time.Duration
	// AbandonAfter: an unfinished file untouched this long, whose hook
	// (the pid in its name) is gone, is from a killed hook and is
	// published as far as it goes; after an hour its hook is not asked
	// (the pid may be another process's by then). Default 1m; a hook
	// writes its file in well under a second.
	AbandonAfter time.Duration
	// RetryFirst, RetryMax: a push whose handling failed in a way worth
	// retrying (the disk, git, the spool) is retried in place, its worker
	// waiting, so the repository's order holds. Default 1s to 1m.
	RetryFirst, RetryMax time.Duration
	// RetryFor bounds the retries: a push still failing after this long
	// is quarantined with the last error, so its worker's other
	// repositories go on. Default 10m.
	RetryFor time.Duration
	Log      *slog.Logger
}

// abandonSurely: an unfinished file this old is abandoned whatever
// process has its pid now.
const abandonSurely = time.Hour

// A drainer holds at most this much of the queue in memory (read and
// not yet published: 64 MiB is one maximal push, or many small ones) and
// at most this many files; the rest waits on disk.
const (
	maxHeldBytes = 64 << 20
	maxHeldFiles = 1024
)

// Queue is a queue directory held by its one drainer (the lock on
// .drain.lock) from OpenQueue to Close.
type Queue struct {
	dir   string
	uid   int // the directory's owner, whose files are trusted; -1: not checked
	lockf *os.File
}

// OpenQueue checks the queue directory and takes its lock:
// ErrDrainerRunning when another drainer holds it. A directory others may
// write is refused: whoever can write a queue file makes the drainer
// publish, with a repository's credentials, what the file says.
func OpenQueue(dir string) (*Queue, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("queue: %s is not a directory", dir)
	}
	if err := queueDirPermError(dir, fi); err != nil {
		return nil, err
	}
	lockf, err := os.OpenFile(filepath.Join(dir, queueLockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue: lock: %w", err)
	}
	if err := flock.TryLock(lockf); err != nil {
		lockf.Close()
		if errors.Is(err, flock.ErrWouldBlock) {
			return nil, fmt.Errorf("queue %s: %w", dir, ErrDrainerRunning)
		}
		return nil, fmt.Errorf("queue: lock: %w", err)
	}
	return &Queue{dir: dir, uid: ownerOf(fi), lockf: lockf}, nil
}

// Dir is the queue's directory.
func (q *Queue) Dir() string { return q.dir }

// Close releases the lock. Unlocked before the close: a child forked
// meanwhile (for git) holds a copy of the descriptor until it execs, and
// with it the lock.
func (q *Queue) Close() error {
	_ = flock.Unlock(q.lockf)
	return q.lockf.Close()
}

// DrainQueue is OpenQueue, Queue.Drain and Close.
func DrainQueue(ctx context.Context, dir string, handle func(context.Context, *QueuedPush) error, o DrainOptions) error {
	q, err := OpenQueue(dir)
	if err != nil {
		return err
	}
	defer q.Close()
	return q.Drain(ctx, handle, o)
}

// Drain publishes the queue until ctx ends: handle is called once per
// finished file (and per abandoned one), in the order the files were
// written per repository. A nil error removes the file; one wrapping
// errQuarantine moves it to quarantine/; any other is retried. A push
// handle has begun is finished when ctx ends (handle gets a context that
// is not cancelled; the pipeline bounds itself by --timeout); the rest stay
// in the queue for the next drainer.
func (q *Queue) Drain(ctx context.Context, handle func(context.Context, *QueuedPush) error, o DrainOptions) error {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.AbandonAfter <= 0 {
		o.AbandonAfter = time.Minute
	}
	if o.RetryFirst <= 0 {
		o.RetryFirst = time.Second
	}
	if o.RetryMax < o.RetryFirst {
		o.RetryMax = max(time.Minute, o.RetryFirst)
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 10 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	wake, stopWatch, err := watchQueue(q.dir)
	if err != nil {
		o.Log.Warn("queue: no change notification; listing the queue periodically", slog.String("queue", q.dir), slog.Any("error", err))
	}
	defer stopWatch()
	if o.Rescan <= 0 {
		o.Rescan = time.Second
		if wake == nil {
			o.Rescan = 100 * time.Millisecond
		}
	}
	d := &drainer{q: q, handle: handle, o: o, inFlight: map[string]bool{}, freed: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	queues := make([]chan *QueuedPush, o.Workers)
	for i := range queues {
		// 16: enough to keep a worker busy between scans; small enough
		// that a worker stuck retrying holds little of the budget.
		queues[i] = make(chan *QueuedPush, 16)
		wg.Go(func() { d.work(ctx, queues[i]) })
	}
	defer wg.Wait()
	defer cancel() // runs first: the workers end, then wg.Wait returns
	tick := time.NewTicker(o.Rescan)
	defer tick.Stop()
	for {
		d.scan(queues)
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick.C:
		case <-d.freed:
		}
	}
}

type drainer struct {
	q      *Queue
	handle func(context.Context, *QueuedPush) error
	o      DrainOptions
	freed  chan struct{} // a file was done while the drainer held back (starved)

	mu       sync.Mutex
	inFlight map[string]bool // names handed to a worker and not yet done
	held     int             // bytes of inFlight files
	starved  bool            // a scan left files out: signal freed when one is done
	warned   map[string]bool // unreadable files already reported, by name

	heads map[string]fileHead // the scanner's own: what the last scan learnt, by name
}

func (d *drainer) path(name string) string { return filepath.Join(d.q.dir, name) }

// scan lists the queue and hands the files ready to publish that no worker
// holds to their workers, oldest write first, up to maxHeldBytes and
// maxHeldFiles held in all. A worker whose queue is full gets none of this
// scan's files (a repository's later file must not pass an earlier one
// left out), and its files are neither read nor counted, so a repository
// that is retrying does not hold up the others.
func (d *drainer) scan(queues []chan *QueuedPush) {
	ents, err := os.ReadDir(d.q.dir)
	if err != nil {
		d.o.Log.Error("queue: list", slog.String("queue", d.q.dir), slog.Any("error", err))
		return
	}
	seen := make(map[string]fileHead, len(d.heads))
	var ready []*QueuedPush
	for _, e := range ents {
		name := e.Name()
		if !queueFileName(e) {
			continue
		}
		d.mu.Lock()
		busy := d.inFlight[name]
		d.mu.Unlock()
		if busy {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if uid := ownerOf(fi); d.q.uid >= 0 && uid != d.q.uid && uid != os.Geteuid() {
			d.quarantine(name, fmt.Errorf("%w: owned by uid %d, not the queue's owner (uid %d) or the drainer's: not trusted", errQuarantine, uid, d.q.uid))
			continue
		}
		if fi.Size() > MaxQueueFile {
			d.quarantine(name, fmt.Errorf("%w: queue file of %d bytes, over %d", errQuarantine, fi.Size(), MaxQueueFile))
			continue
		}
		h, ok := d.heads[name]
		if !ok || !h.mtime.Equal(fi.ModTime()) || h.size != fi.Size() {
			h = fileHead{mtime: fi.ModTime(), size: fi.Size()}
			// Only the end is read to tell a finished file.
			if h.complete, err = endsWithEnd(d.path(name), fi.Size()); err != nil {
				d.unreadable(name, err)
				continue
			}
		}
		if !h.complete && !d.abandoned(name, fi.ModTime()) {
			continue // still being written
		}
		if h.repo == "" {
			// The header names the repository, and so the worker.
			if h.repo, err = queueFileRepo(d.path(name)); errors.Is(err, errQuarantine) {
				d.quarantine(name, err)
				continue
			} else if err != nil {
				d.unreadable(name, err)
				continue
			}
		}
		seen[name] = h
		ready = append(ready, &QueuedPush{Name: name, Time: fi.ModTime(), Complete: h.complete, size: int(fi.Size()), repo: h.repo})
	}
	d.heads = seen
	slices.SortFunc(ready, func(a, b *QueuedPush) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		// Names are <pid>.<n>: shorter first orders pids as numbers.
		if c := len(a.Name) - len(b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	full := make([]bool, len(queues))
	isFull := func(w int) bool {
		full[w] = full[w] || len(queues[w]) == cap(queues[w])
		if full[w] {
			d.setStarved()
		}
		return full[w]
	}
	for _, p := range ready {
		// A file whose header its head did not hold (repo "") is read
		// whole before its worker is known.
		if p.repo != "" && isFull(workerOf(p.repo, len(queues))) {
			continue
		}
		d.mu.Lock()
		over := len(d.inFlight) > 0 && (d.held+p.size > maxHeldBytes || len(d.inFlight) >= maxHeldFiles)
		if over {
			d.starved = true
		}
		d.mu.Unlock()
		if over {
			return // the rest when a worker has finished some
		}
		if !d.load(p) {
			continue
		}
		w := workerOf(p.repo, len(queues))
		if isFull(w) {
			d.release(p, false)
			continue
		}
		// Only this goroutine sends, and the queue was not full.
		queues[w] <- p
	}
}

// fileHead is what a scan learnt of a queue file, kept while its time
// and size stay the same (a finished file does not change).
type fileHead struct {
	mtime    time.Time
	size     int64
	complete bool
	repo     string // "" until the header was read whole
}

func workerOf(repo string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(repo))
	return int(h.Sum32() % uint32(n))
}

func (d *drainer) setStarved() {
	d.mu.Lock()
	d.starved = true
	d.mu.Unlock()
}

// load reads a file whole for its worker and counts it held; false when
// there is nothing to hand out (gone, quarantined, still being written,
// removed as empty).
func (d *drainer) load(p *QueuedPush) bool {
	data, err := os.ReadFile(d.path(p.Name))
	if err != nil {
		d.unreadable(p.Name, err)
		return false
	}
	qf, err := ParseQueueFile(data)
	if err != nil {
		d.quarantine(p.Name, fmt.Errorf("%w: %v", errQuarantine, err))
		return false
	}
	if !qf.Complete && !d.abandoned(p.Name, p.Time) {
		return false // still being written (it only looked finished)
	}
	if qf.Dir == "" { // a killed hook that wrote no whole header: nothing to publish
		d.o.Log.Warn("queue: removing an unfinished file with nothing to publish", slog.String("file", d.path(p.Name)))
		os.Remove(d.path(p.Name))
		return false
	}
	if !qf.Complete {
		d.o.Log.Warn("queue: publishing an unfinished file (its hook was killed?)", slog.String("file", d.path(p.Name)), slog.Duration("untouched", time.Since(p.Time)))
	}
	p.Hook, p.Dir, p.Env, p.Input, p.Complete = qf.Hook, qf.Dir, qf.Env, qf.Input, qf.Complete
	if p.repo == "" { // the scan's look at the head did not reach the end of the header
		p.repo = queuedRepo(p)
	}
	p.PushID = queuedPushID(p.Name, p.Time, data)
	p.size = len(data)
	d.mu.Lock()
	d.inFlight[p.Name] = true
	d.held += p.size
	d.mu.Unlock()
	return true
}

// abandoned says whether an unfinished file is from a hook that will not
// finish it: untouched for AbandonAfter and its writer gone, or untouched
// for an hour.
func (d *drainer) abandoned(name string, mtime time.Time) bool {
	age := time.Since(mtime)
	if age < d.o.AbandonAfter {
		return false
	}
	pid, _, _ := strings.Cut(name, ".")
	n, err := strconv.Atoi(pid)
	return age >= abandonSurely || err != nil || !processAlive(n)
}

// unreadable reports, once per file, one the drainer cannot read (written
// by another user with mode 0600, say), and moves it to quarantine where
// it can; a file that is gone is nothing to report.
func (d *drainer) unreadable(name string, err error) {
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	d.mu.Lock()
	if d.warned == nil {
		d.warned = map[string]bool{}
	}
	first := !d.warned[name]
	if len(d.warned) < maxHeldFiles {
		d.warned[name] = true
	}
	d.mu.Unlock()
	if first {
		d.quarantine(name, fmt.Errorf("%w: cannot read it (%v): run the drainer as the user git runs hooks as", errQuarantine, err))
	}
}

// release forgets a file a worker is done with (published, quarantined,
// or left on disk at shutdown) and, if a scan held files back and the
// worker has nothing more queued, has the drainer list the queue again
// (not after every file: a listing costs a stat per file of a backlog).
func (d *drainer) release(p *QueuedPush, idle bool) {
	d.mu.Lock()
	delete(d.inFlight, p.Name)
	d.held -= p.size
	signal := d.starved && idle
	if signal {
		d.starved = false
	}
	d.mu.Unlock()
	if signal {
		select {
		case d.freed <- struct{}{}:
		default:
		}
	}
}

// QueueDepth counts the pushes in the queue in dir: finished files and
// files still being written, not quarantined ones.
func QueueDepth(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if queueFileName(e) {
			n++
		}
	}
	return n, nil
}

// queueFileName tells a queue file from the lock, the quarantine and
// anything else in the directory.
func queueFileName(e fs.DirEntry) bool {
	name := e.Name()
	return !strings.HasPrefix(name, ".") && e.Type().IsRegular() && !strings.HasSuffix(name, ".reason")
}

func endsWithEnd(path string, size int64) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if size < int64(len(queueEnd)+1) {
		return false, nil
	}
	var b [len(queueEnd) + 1]byte
	if _, err := f.ReadAt(b[:], size-int64(len(b))); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return string(b[:]) == "\n"+queueEnd, nil
}

// work handles one worker's files in order until ctx ends; what is still
// in its channel then stays in the queue.
func (d *drainer) work(ctx context.Context, in <-chan *QueuedPush) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-in:
			if ctx.Err() != nil {
				return // picked at random against Done: leave it on disk
			}
			d.one(ctx, p)
			d.release(p, len(in) == 0)
		}
	}
}

// one handles a file until it is published or quarantined, or ctx ends.
// A retryable failure is retried in place with backoff, so nothing of the
// same repository overtakes it. The handler itself is not cancelled: a
// push begun is finished (spooled at worst), not cut off half-enriched.
func (d *drainer) one(ctx context.Context, p *QueuedPush) {
	path := d.path(p.Name)
	delay := d.o.RetryFirst
	giveUp := time.Now().Add(d.o.RetryFor)
	for {
		start := time.Now()
		err := d.handle(context.WithoutCancel(ctx), p)
		switch {
		case err == nil:
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				d.o.Log.Error("queue: remove a published file", slog.String("file", path), slog.Any("error", err))
			}
			d.o.Log.Debug("queue: done", slog.String("file", path), slog.String("dir", p.Dir),
				slog.Duration("waited", start.Sub(p.Time)), slog.Duration("took", time.Since(start)))
			return
		case errors.Is(err, errQuarantine):
			d.quarantine(p.Name, err)
			return
		case time.Now().After(giveUp):
			d.quarantine(p.Name, fmt.Errorf("%w: still failing after %v of retries: %v (fix the cause and move the file back to publish it)", errQuarantine, d.o.RetryFor, err))
			return
		}
		d.o.Log.Error("queue: push not published, retrying", slog.String("file", path), slog.String("dir", p.Dir), slog.Duration("in", delay), slog.Any("error", err))
		select {
		case <-ctx.Done():
			return // the file stays; the next drainer takes it
		case <-time.After(delay):
		}
		delay = min(2*delay, d.o.RetryMax)
	}
}

// quarantine moves a queue file that cannot be published into
// quarantine/, under its name and the time (pids recur), with the reason
// beside it, and logs it.
func (d *drainer) quarantine(name string, reason error) {
	to, err := quarantineFile(d.q.dir, name, name+"."+strconv.FormatInt(time.Now().UnixNano(), 10), reason)
	d.o.Log.Error("queue: file quarantined", slog.String("file", to), slog.String("reason", reason.Error()), slog.Any("move_error", err))
}
