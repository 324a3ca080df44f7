package hook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// The queue takes the refcast process out of a push. A queue-mode hook
// script (install-hook --queue DIR) does with shell builtins alone what git
// needs of it: it writes git's update lines, the directory the hook ran in
// and the environment variables the hook reads into a file of its own in
// DIR, and exits. A long-running `refcast hook drain --queue DIR` sees the
// file close (inotify on Linux), runs the post-receive pipeline on it
// exactly as the hook would have (Runner.PostReceive with that directory
// and environment: enrichment, publish or spool) and removes the file.
//
// Why: a push with the hook used to wait for a whole refcast process:
// exec, the Go runtime and ~160 package inits, 20-30 ms on a 2-core
// machine, where a plain local push takes 70-90 ms. The script costs a
// dash start and a few writes (docs/performance.md, "The queue").
//
// A queue file, version 1:
//
//	refcast-queue 1
//	dir <n>
//	<n bytes: the absolute working directory of the hook>
//	env <NAME> <n>            (zero or more, each variable the hook had set)
//	<n bytes: its value>
//	updates
//	<git's "<old> <new> <ref>" lines, as git gave them>
//	end
//
// Lengths are in bytes (the script sets LC_ALL=C before ${#v}), so values
// may hold newlines. A file without the final "end" line is still being
// written, or its hook was killed: it is left alone until AbandonAfter has
// passed since its last write, then the complete update lines it holds are
// published (they are ref updates git made; losing them would be worse).

const (
	queueMagic = "refcast-queue 1"
	queueEnd   = "end\n"
	// queueLockName is held by the one drainer of a queue, for its life.
	queueLockName = ".drain.lock"
	// MaxQueueFile bounds a queue file: git's input (MaxInput) and an
	// environment of a few KB.
	MaxQueueFile = MaxInput + 1<<20
)

// QueueEnv lists the environment variables a queue-mode script carries to
// the drainer: everything the post-receive pipeline reads (settings,
// pusher, repository and git config location). The drainer runs each push
// with these and nothing else from the hook's environment.
var QueueEnv = []string{
	"GIT_DIR", "GIT_COMMON_DIR", "GIT_EXEC_PATH",
	"HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM",
	"REFCAST_URL", "REFCAST_TOKEN", "REFCAST_REDIS", "REFCAST_PARTITIONS",
	"REFCAST_REPO", "REFCAST_REPO_MAP", "REFCAST_REPO_ROOT", "REFCAST_PUSHER",
	"REFCAST_TIMEOUT", "REFCAST_SPOOL", "REFCAST_ENRICH_BUDGET", "REFCAST_FLUSH_BACKGROUND",
	"REFCAST_HOOK_DIRECT",
	"GL_USERNAME", "GL_PROJECT_PATH", "GITEA_PUSHER_NAME", "REMOTE_USER",
}

// queueEnvVar names the queue to a hook the script runs as a process
// when it cannot queue a push, so that push waits for the older ones
// queued (Runner.waitQueued). Not carried in queue files.
const queueEnvVar = "REFCAST_QUEUE"

// queueBypassEnv are variables whose effect a queue file cannot carry
// (git -c settings, a config file named for this command, objects outside
// the repository): with any of them set the script runs the hook as a
// process, as without a queue.
var queueBypassEnv = []string{"GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_CONFIG", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES"}

// QueuedPush is one queue file, read.
type QueuedPush struct {
	Name     string            // the file's name in the queue
	Dir      string            // where the hook ran (receive-pack: the repository)
	Env      map[string]string // the variables of QueueEnv the hook had set
	Input    []byte            // git's update lines
	Time     time.Time         // the file's last write: when the hook ran
	Complete bool              // false: the hook did not finish writing (killed)
	// PushID is the id it is published under: derived from the file
	// (name, time, content), so a drainer killed between publishing and
	// removing the file publishes it again under the same id, which the
	// bus deduplicates.
	PushID string
	// repo is the repository's common directory (a linked worktree's
	// pushes share the main one's), the key that keeps a repository's
	// pushes in order; Dir when it cannot be read.
	repo string
}

// queuedPushID is a queue file's push id (see QueuedPush.PushID), in the
// form NewPushID gives.
func queuedPushID(name string, at time.Time, data []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00", name, at.UnixNano())
	h.Write(data)
	return "p-" + strconv.FormatInt(at.UnixNano(), 10) + "-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// ParseQueueFile reads a queue file's content. complete says whether the
// "end" line follows the "updates" line (a value may be "end" too, and the
// script writes a line at a time); an incomplete file's input holds its
// complete update lines only. No prefix of a well-formed file is an error:
// one cut in the header is incomplete with nothing to publish (dir empty).
func ParseQueueFile(data []byte) (dir string, env map[string]string, input []byte, complete bool, err error) {
	rest := data
	line := func() (string, bool) {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		l := string(rest[:i])
		rest = rest[i+1:]
		return l, true
	}
	value := func(n int) (string, bool) {
		if n < 0 || len(rest) < n+1 || rest[n] != '\n' {
			return "", false
		}
		v := string(rest[:n])
		rest = rest[n+1:]
		return v, true
	}
	l, ok := line()
	if !ok {
		return "", nil, nil, false, nil // cut short: still being written, or its hook was killed
	}
	if l != queueMagic {
		return "", nil, nil, false, fmt.Errorf("queue file: first line %.40q, want %q", l, queueMagic)
	}
	env = map[string]string{}
	for {
		l, ok = line()
		if !ok {
			return "", nil, nil, false, nil // cut short: still being written, or its hook was killed
		}
		if l == "updates" {
			break
		}
		f := strings.Split(l, " ")
		var name, n string
		switch {
		case len(f) == 2 && f[0] == "dir":
			n = f[1]
		case len(f) == 3 && f[0] == "env" && validEnvName(f[1]):
			name, n = f[1], f[2]
		default:
			return "", nil, nil, false, fmt.Errorf("queue file: header line %.60q is not dir N or env NAME N", l)
		}
		size, err := strconv.Atoi(n)
		if err != nil || size < 0 || size > MaxQueueFile {
			return "", nil, nil, false, fmt.Errorf("queue file: bad length in %.60q", l)
		}
		v, ok := value(size)
		if !ok {
			if len(rest) < size+1 {
				return "", nil, nil, false, nil // cut short: still being written, or its hook was killed
			}
			return "", nil, nil, false, fmt.Errorf("queue file: value of %.60q is not %d bytes and a newline", l, size)
		}
		if name == "" {
			dir = v
		} else {
			env[name] = v
		}
	}
	if dir == "" || !filepath.IsAbs(dir) {
		return "", nil, nil, false, fmt.Errorf("queue file: the hook's directory %q is not an absolute path", dir)
	}
	complete = string(rest) == queueEnd || bytes.HasSuffix(rest, []byte("\n"+queueEnd))
	if complete {
		input = rest[:len(rest)-len(queueEnd)]
	} else if i := bytes.LastIndexByte(rest, '\n'); i >= 0 {
		input = rest[:i+1]
	}
	return dir, env, input, complete, nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range []byte(s) {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

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
	// AbandonAfter: an unfinished file untouched this long is from a
	// killed hook and is published as far as it goes. Default 1m; a hook
	// writes its file in well under a second even for 10,000 updates.
	AbandonAfter time.Duration
	// RetryFirst, RetryMax: a push whose handling failed in a way worth
	// retrying (its spool could not be written) is retried in place, its
	// worker waiting, so the repository's order holds. Default 1s to 1m.
	RetryFirst, RetryMax time.Duration
	Log                  *slog.Logger
}

// DrainQueue publishes the queue in dir until ctx ends: handle is called
// once per complete file (and per abandoned one), in the order the files
// were written per repository. A nil error removes the file; one wrapping
// errQuarantine moves it to quarantine/; any other is retried. It holds
// the queue's lock for its life: ErrDrainerRunning when another drainer has
// it.
func DrainQueue(ctx context.Context, dir string, handle func(context.Context, *QueuedPush) error, o DrainOptions) error {
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
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("queue: %s is not a directory", dir)
	}
	lockf, err := os.OpenFile(filepath.Join(dir, queueLockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("queue: lock: %w", err)
	}
	defer lockf.Close()
	if err := flock.TryLock(lockf); err != nil {
		if errors.Is(err, flock.ErrWouldBlock) {
			return fmt.Errorf("queue %s: %w", dir, ErrDrainerRunning)
		}
		return fmt.Errorf("queue: lock: %w", err)
	}
	// Unlocked before the close: a child forked meanwhile (by this
	// process, for git) holds a copy of the descriptor until it execs,
	// and with it the lock.
	defer flock.Unlock(lockf)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wake, stopWatch, err := watchQueue(dir)
	if err != nil {
		o.Log.Warn("queue: no change notification; listing the queue periodically", slog.String("queue", dir), slog.Any("error", err))
	}
	defer stopWatch()
	if o.Rescan <= 0 {
		o.Rescan = time.Second
		if wake == nil {
			o.Rescan = 100 * time.Millisecond
		}
	}
	d := &drainer{dir: dir, handle: handle, o: o, inFlight: map[string]bool{}}
	var wg sync.WaitGroup
	queues := make([]chan *QueuedPush, o.Workers)
	for i := range queues {
		// Buffered so one scan's files go out without waiting; a full
		// worker holds the scan (the files wait on disk, not in memory).
		queues[i] = make(chan *QueuedPush, 64)
		wg.Go(func() { d.work(ctx, queues[i]) })
	}
	defer wg.Wait()
	defer cancel()
	tick := time.NewTicker(o.Rescan)
	defer tick.Stop()
	for {
		ready, more := d.scan()
		for _, q := range ready {
			h := fnv.New32a()
			h.Write([]byte(q.repo))
			select {
			case queues[h.Sum32()%uint32(len(queues))] <- q:
			case <-ctx.Done():
				return nil
			}
		}
		if more {
			continue // a backlog: the next batch now, not at the next wake
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick.C:
		}
	}
}

// A scan reads at most this much of a backlog into memory (64 MiB: one
// maximal push, or many small ones) and at most this many files; the
// rest waits on disk for the next scan, which follows at once.
const (
	maxScanBytes = 64 << 20
	maxScanFiles = 1024
)

type drainer struct {
	dir    string
	handle func(context.Context, *QueuedPush) error
	o      DrainOptions

	mu       sync.Mutex
	inFlight map[string]bool // names handed to a worker and not yet done
}

// scan lists the queue and returns the files ready to publish that no
// worker holds, oldest write first (name breaking ties), up to
// maxScanBytes and maxScanFiles; more says some were left for the next.
func (d *drainer) scan() (out []*QueuedPush, more bool) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		d.o.Log.Error("queue: list", slog.String("queue", d.dir), slog.Any("error", err))
		return nil, false
	}
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
		if fi.Size() > MaxQueueFile {
			d.quarantine(name, fmt.Errorf("%w: queue file of %d bytes, over %d", errQuarantine, fi.Size(), MaxQueueFile))
			continue
		}
		// Only the end is read to tell a finished file; a finished one is
		// read whole by its worker.
		complete, err := endsWithEnd(filepath.Join(d.dir, name), fi.Size())
		if err != nil {
			continue
		}
		if !complete && time.Since(fi.ModTime()) < d.o.AbandonAfter {
			continue // still being written
		}
		ready = append(ready, &QueuedPush{Name: name, Time: fi.ModTime(), Complete: complete})
	}
	slices.SortFunc(ready, func(a, b *QueuedPush) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	// Read each now, in order, so the worker is picked by repository.
	total := 0
	for i, q := range ready {
		if len(out) >= maxScanFiles || total >= maxScanBytes {
			return out, i < len(ready)
		}
		data, err := os.ReadFile(filepath.Join(d.dir, q.Name))
		if err != nil {
			continue
		}
		dir, env, input, complete, err := ParseQueueFile(data)
		if err != nil {
			d.quarantine(q.Name, fmt.Errorf("%w: %v", errQuarantine, err))
			continue
		}
		if !complete && time.Since(q.Time) < d.o.AbandonAfter {
			continue // still being written (it only looked finished)
		}
		if dir == "" { // a killed hook that wrote no whole header: nothing to publish
			d.o.Log.Warn("queue: removing an unfinished file with nothing to publish", slog.String("file", filepath.Join(d.dir, q.Name)))
			os.Remove(filepath.Join(d.dir, q.Name))
			continue
		}
		if !complete {
			d.o.Log.Warn("queue: publishing an unfinished file (its hook was killed?)", slog.String("file", filepath.Join(d.dir, q.Name)), slog.Duration("untouched", time.Since(q.Time)))
		}
		q.Dir, q.Env, q.Input, q.Complete = dir, env, input, complete
		q.repo = queuedRepo(q)
		q.PushID = queuedPushID(q.Name, q.Time, data)
		total += len(data)
		d.mu.Lock()
		d.inFlight[q.Name] = true
		d.mu.Unlock()
		out = append(out, q)
	}
	return out, false
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
	if size < int64(len(queueEnd)+1) {
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [len(queueEnd) + 1]byte
	if _, err := f.ReadAt(b[:], size-int64(len(b))); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return string(b[:]) == "\n"+queueEnd, nil
}

// work handles one worker's files in order. A retryable failure is
// retried in place with backoff, so nothing of the same repository
// overtakes it.
func (d *drainer) work(ctx context.Context, in <-chan *QueuedPush) {
	for {
		select {
		case <-ctx.Done():
			return
		case q := <-in:
			d.one(ctx, q)
			d.mu.Lock()
			delete(d.inFlight, q.Name)
			d.mu.Unlock()
		}
	}
}

func (d *drainer) one(ctx context.Context, q *QueuedPush) {
	path := filepath.Join(d.dir, q.Name)
	delay := d.o.RetryFirst
	for {
		start := time.Now()
		err := d.handle(ctx, q)
		switch {
		case err == nil:
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				d.o.Log.Error("queue: remove a published file", slog.String("file", path), slog.Any("error", err))
			}
			d.o.Log.Debug("queue: done", slog.String("file", path), slog.String("dir", q.Dir),
				slog.Duration("waited", start.Sub(q.Time)), slog.Duration("took", time.Since(start)))
			return
		case errors.Is(err, errQuarantine):
			d.quarantine(q.Name, err)
			return
		}
		d.o.Log.Error("queue: push not published, retrying", slog.String("file", path), slog.String("dir", q.Dir), slog.Duration("in", delay), slog.Any("error", err))
		select {
		case <-ctx.Done():
			return // the file stays; the next drainer takes it
		case <-time.After(delay):
		}
		delay = min(2*delay, d.o.RetryMax)
	}
}

// quarantine moves a queue file that cannot be published into
// quarantine/, with the reason beside it, and logs it.
func (d *drainer) quarantine(name string, reason error) {
	to, err := quarantineFile(d.dir, name, reason)
	d.o.Log.Error("queue: file quarantined", slog.String("file", to), slog.String("reason", reason.Error()), slog.Any("move_error", err))
}

// Drain is `refcast hook drain --queue DIR`: DrainQueue on dir, each queued
// push run through PostReceive as its hook would have run it: in the
// hook's directory, with the environment it carried, r's flags and
// destination on top, under the push id and time of its file. The
// destinations stay open across pushes. What the hook would have told the
// pusher (spooled, rejected) is logged instead.
func (r *Runner) Drain(ctx context.Context, dir string, o DrainOptions) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	pubs := &publisherCache{}
	defer pubs.close()
	handle := func(ctx context.Context, q *QueuedPush) error {
		env := queuedEnv(q)
		var out bytes.Buffer
		rr := &Runner{
			Flags:        r.Flags,
			Getenv:       func(k string) string { return env[k] },
			LookupEnv:    func(k string) (string, bool) { v, ok := env[k]; return v, ok },
			Stdin:        bytes.NewReader(q.Input),
			Stdout:       &out,
			Stderr:       &out,
			OpenBus:      r.OpenBus,
			Publisher:    r.Publisher,
			Git:          r.Git,
			FlushCommand: r.FlushCommand,
			dir:          q.Dir,
			pushID:       q.PushID,
			now:          q.Time,
			flushEnv:     queuedFlushEnv(env, r.env("PATH")),
			pubs:         pubs,
		}
		err := rr.PostReceive(ctx)
		for line := range strings.Lines(out.String()) {
			o.Log.Warn(strings.TrimSpace(line), slog.String("file", filepath.Join(dir, q.Name)), slog.String("dir", q.Dir))
		}
		var st ExitStatus
		switch {
		case err == nil:
			return nil
		case errors.As(err, &st) && st == 1:
			return err // the spool could not be written: retried
		}
		return fmt.Errorf("%w: %v", errQuarantine, err)
	}
	return DrainQueue(ctx, dir, handle, o)
}

// queuedEnv is the environment a queued push runs with: what its hook
// carried, GIT_DIR and GIT_COMMON_DIR made absolute (git hands
// receive-pack's hooks GIT_DIR=. with the repository as working
// directory; the drainer runs elsewhere).
func queuedEnv(q *QueuedPush) map[string]string {
	env := make(map[string]string, len(q.Env))
	for k, v := range q.Env {
		if (k == "GIT_DIR" || k == "GIT_COMMON_DIR") && v != "" && !filepath.IsAbs(v) {
			v = filepath.Join(q.Dir, v)
		}
		env[k] = v
	}
	return env
}

// queuedRepo is the common directory of the repository a queued push
// is for, as the pipeline will find it (GIT_DIR, GIT_COMMON_DIR, the
// commondir file); the hook's directory when that fails.
func queuedRepo(q *QueuedPush) string {
	env := queuedEnv(q)
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	gitDir, err := realDir(env["GIT_DIR"])
	if err != nil {
		return q.Dir
	}
	common, err := commonDirOf(lookup, gitDir)
	if err != nil {
		return q.Dir
	}
	return common
}

// queuedAhead counts the pushes of the repository whose common directory
// is repo that wait in the queue dir, written before t.
func queuedAhead(dir, repo string, t time.Time) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if !queueFileName(e) {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(t) || fi.Size() > MaxQueueFile {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		d, env, _, _, err := ParseQueueFile(data)
		if err != nil || d == "" {
			continue
		}
		if queuedRepo(&QueuedPush{Dir: d, Env: env}) == repo {
			n++
		}
	}
	return n
}

// waitQueued holds a push the script could not queue (see queueScript)
// until the queue has published the same repository's older pushes, so it
// does not overtake them; at most timeout, then it goes ahead with a
// warning (no drainer is running, or it is far behind).
func (r *Runner) waitQueued(ctx context.Context, repo *Repo, timeout time.Duration) {
	dir := r.env(queueEnvVar)
	if dir == "" || r.pushID != "" {
		return // no queue, or this is the drainer
	}
	start := time.Now()
	deadline := start.Add(cmp.Or(timeout, DefaultTimeout))
	for {
		n := queuedAhead(dir, repo.CommonDir, start)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.warnf("warning: published ahead of %d older push(es) of this repository still in the queue %s (is 'refcast hook drain --queue %s' running?)", n, dir, dir)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// queuedFlushEnv is the background flush's environment for a queued push:
// what its hook carried, and PATH to find git.
func queuedFlushEnv(env map[string]string, path string) []string {
	out := make([]string, 0, len(env)+1)
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	if _, ok := env["PATH"]; !ok && path != "" {
		out = append(out, "PATH="+path)
	}
	slices.Sort(out)
	return out
}

// checkQueueDir refuses a queue install-hook cannot use: not absolute, not
// a directory. A queue no drainer holds is a warning: pushes wait there,
// safe, until `refcast hook drain` starts.
func checkQueueDir(cmd, dir string, stderr io.Writer) error {
	if !filepath.IsAbs(dir) {
		return usagef("%s: --queue %q: want an absolute path (the hook runs in the repository)", cmd, dir)
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return usagef("%s: --queue %s: not a directory; create it (writable by the user git runs hooks as, readable by the drainer) and start 'refcast hook drain --queue %s'", cmd, dir, dir)
	}
	if !QueueDrained(dir) {
		fmt.Fprintf(stderr, "refcast %s: warning: no 'refcast hook drain --queue %s' is running: pushes wait in the queue until one starts\n", cmd, dir)
	}
	return nil
}

// QueueDrained reports whether a drainer holds the queue in dir.
func QueueDrained(dir string) bool {
	f, err := os.Open(filepath.Join(dir, queueLockName))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := flock.TryLock(f); err != nil {
		return errors.Is(err, flock.ErrWouldBlock)
	}
	_ = flock.Unlock(f)
	return false
}
