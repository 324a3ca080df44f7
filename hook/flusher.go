package hook

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/refcast/refcast/internal/flock"
)

// The background flush: when a hook spools a push, it starts one detached
// `refcast hook flush --wait` per spool, which retries until the spool is
// empty, so a quiet repository's push is not left waiting for the next
// push. A second lock file (not the spool's flush lock, which the hook's
// own delivery takes for each flush) keeps it to one per spool.
const (
	// flusherLockName is held by the background flusher for its lifetime.
	flusherLockName = ".flusher.lock"
	// FlushLogName is the background flusher's log, in the spool
	// directory. It is truncated when it passes flushLogMax at a start.
	FlushLogName = "flush.log"
	// flushLogMax keeps the log small: a day of retries at the capped
	// delay writes about 300 lines (60 KiB); 1 MiB is many such days.
	flushLogMax = 1 << 20
)

// Background flush tuning (flush --wait).
const (
	// DefaultRetryFirst is the first delay after a failed flush; a node
	// restarting comes back within seconds.
	DefaultRetryFirst = time.Second
	// DefaultRetryMax caps the doubling delay: a destination down for
	// hours is tried every 5 minutes, 288 times a day, not more.
	DefaultRetryMax = 5 * time.Minute
	// DefaultGiveUp bounds the flusher's life. After it the spool stays
	// for the next push or a manual `refcast hook flush`: a process
	// retrying forever for a repository nobody pushes to is worse than
	// a spool that waits.
	DefaultGiveUp = 24 * time.Hour
)

// ErrFlusherRunning is returned by Spool.FlushWait when another process
// is already flushing this spool in the background.
var ErrFlusherRunning = errors.New("a background flush of this spool is already running")

// WaitOptions tune Spool.FlushWait. Zero values take the defaults above.
type WaitOptions struct {
	First, Max time.Duration // retry delays, doubling from First to Max, with jitter
	GiveUp     time.Duration // total time before giving up
	PerTry     time.Duration // bound on one flush; default DefaultFlushTimeout
}

// FlushWait flushes the spool until it is empty, retrying failures with
// exponential backoff and jitter, for at most GiveUp. It holds the
// flusher lock meanwhile and returns ErrFlusherRunning at once if another
// process holds it. Each try is a Flush, so order and idempotence are
// Flush's: nothing is lost (files are removed only once published) and a
// resend after a crash carries the same push id.
func (s *Spool) FlushWait(ctx context.Context, pub Publisher, o WaitOptions) (FlushResult, error) {
	if o.First <= 0 {
		o.First = DefaultRetryFirst
	}
	if o.Max < o.First {
		o.Max = max(DefaultRetryMax, o.First)
	}
	if o.GiveUp <= 0 {
		o.GiveUp = DefaultGiveUp
	}
	if o.PerTry <= 0 {
		o.PerTry = DefaultFlushTimeout
	}
	var total FlushResult
	unlock, err := s.lockFlusher()
	if err != nil {
		total.Left = s.count()
		return total, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.GiveUp)
	defer cancel()
	for {
		delay := o.First
		for failures := 0; ; failures++ {
			tctx, tcancel := context.WithTimeout(ctx, o.PerTry)
			res, err := s.Flush(tctx, pub)
			tcancel()
			total.Published += res.Published
			total.Quarantined += res.Quarantined
			if err == nil {
				break
			}
			if failures == 0 {
				s.log.Warn("background flush failed; retrying", slog.Int("pending", res.Left), slog.Any("error", err))
			}
			wait := jitter(delay)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				unlock()
				total.Left = s.count()
				return total, fmt.Errorf("gave up after %v (%d failed tries), last: %w", o.GiveUp, failures+1, err)
			case <-t.C:
			}
			delay = min(delay*2, o.Max)
		}
		unlock()
		// A hook that spooled after the last listing saw this lock held and
		// started no flusher of its own: look again now that it is free.
		if s.count() == 0 {
			return total, nil
		}
		if unlock, err = s.lockFlusher(); err != nil {
			if errors.Is(err, ErrFlusherRunning) {
				return total, nil // the newer flusher has it
			}
			total.Left = s.count()
			return total, err
		}
	}
}

// jitter spreads d over [d/2, d], so flushers of many repositories that
// failed together do not retry together.
func jitter(d time.Duration) time.Duration {
	half := d / 2
	return half + rand.N(d-half+1)
}

// lockFlusher takes the flusher lock without waiting.
func (s *Spool) lockFlusher() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, flusherLockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock spool %s: %w", s.dir, err)
	}
	if err := flock.TryLock(f); err != nil {
		f.Close()
		if errors.Is(err, flock.ErrWouldBlock) {
			return nil, ErrFlusherRunning
		}
		return nil, fmt.Errorf("lock spool %s: %w", s.dir, err)
	}
	return func() {
		_ = flock.Unlock(f)
		f.Close()
	}, nil
}

// FlusherRunning reports whether a background flusher holds this spool.
func (s *Spool) FlusherRunning() bool {
	unlock, err := s.lockFlusher()
	if err != nil {
		return errors.Is(err, ErrFlusherRunning)
	}
	unlock()
	return false
}

// StartFlusher starts command (with "--spool DIR" appended) as a
// detached process, unless one already flushes this spool: its own
// session and process group (so git's push, which waits for the hook, is
// not held, and a signal to the hook's group does not reach it), standard
// input from the null device and output appended to FlushLogName in the
// spool. It returns false, nil where the platform cannot detach (Windows:
// the next push's hook flushes instead). It runs in dir with env ("" and
// nil: this process's). reap waits for it in the background: a
// long-running caller (a drainer) would otherwise keep a zombie per start;
// a hook exits at once and leaves it to init.
func (s *Spool) StartFlusher(command []string, dir string, env []string, reap bool) (bool, error) {
	if !canDetach || len(command) == 0 {
		return false, nil
	}
	if s.FlusherRunning() {
		return false, nil // it looks again before it exits; see FlushWait
	}
	logPath := filepath.Join(s.dir, FlushLogName)
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > flushLogMax {
		flags |= os.O_TRUNC
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("start background flush: %w", err)
	}
	logf, err := os.OpenFile(logPath, flags, 0o600)
	if err != nil {
		return false, fmt.Errorf("start background flush: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(command[0], append(command[1:len(command):len(command)], "--spool", s.dir)...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = logf, logf // *os.File: passed as is, no copying goroutine
	cmd.SysProcAttr = detachAttr()
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("start background flush: %w", err)
	}
	if reap {
		// Ends when the flusher does (it gives up after GiveUp, 24h).
		go func() { _ = cmd.Wait() }()
		return true, nil
	}
	// Not waited for: it outlives this process and init reaps it.
	_ = cmd.Process.Release()
	return true, nil
}
