package hook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/flock"
	"github.com/refcast/refcast/internal/fsync"
)

// Spool file layout.
const (
	spoolExt       = ".push"
	spoolTmpPrefix = ".tmp-"
	lockName       = ".lock"
	// QuarantineDir is the spool subdirectory where files that can never
	// be published (corrupt, or rejected as invalid) are moved, each with
	// a ".reason" file beside it.
	QuarantineDir = "quarantine"
	// staleTmp is when a temp file left by a crashed writer is removed.
	staleTmp = 10 * time.Minute
	// lockPoll is how often a busy spool lock is retried.
	lockPoll = 10 * time.Millisecond
)

// DefaultSpoolName is the spool directory inside the git directory when no
// other is configured.
const DefaultSpoolName = "refcast-spool"

// Spool is a directory of pushes waiting to be published: one JSON file
// (a bus.Push) per push, named so that names sort in spool order. Writes
// are atomic and durable (temp file, fsync, rename, directory fsync), so a
// crash leaves either the whole push or nothing. Any number of processes
// may write at once; Flush takes an exclusive lock so that two flushes do
// not send the same file concurrently (push ids make a resend harmless).
type Spool struct {
	dir string // set at construction
	log *slog.Logger
}

// seq orders spool files written by one process within one clock tick.
var seq atomic.Uint64

// OpenSpool creates dir (0700) if needed. log may be nil.
func OpenSpool(dir string, log *slog.Logger) (*Spool, error) {
	if dir == "" {
		return nil, errors.New("spool directory is not set")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Spool{dir: dir, log: log}, nil
}

// Dir returns the spool directory.
func (s *Spool) Dir() string { return s.dir }

// Write stores p durably and returns the file's path.
func (s *Spool) Write(p *bus.Push) (string, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("spool push %s: %w", p.ID, err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("%020d-%010d-%08d-%s%s", time.Now().UnixNano(), seq.Add(1), os.Getpid()%100000000, hex.EncodeToString(rnd[:]), spoolExt)
	if err := writeFileAtomic(s.dir, name, data); err != nil {
		return "", fmt.Errorf("spool push %s: %w", p.ID, err)
	}
	return filepath.Join(s.dir, name), nil
}

// writeFileAtomic writes dir/name via a synced temp file and a rename, then
// syncs the directory so the rename itself survives a crash.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, spoolTmpPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return fsync.Dir(dir)
}

// Pending lists the spooled files, oldest first, as names in Dir.
func (s *Spool) Pending() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list spool %s: %w", s.dir, err)
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); e.Type().IsRegular() && strings.HasSuffix(n, spoolExt) && !strings.HasPrefix(n, ".") {
			names = append(names, n)
		}
	}
	slices.Sort(names) // ReadDir sorts already; keep the contract explicit
	return names, nil
}

// FlushResult counts what a Flush did.
type FlushResult struct {
	Published   int // sent and removed
	Quarantined int // corrupt or rejected as invalid: moved to quarantine/
	Left        int // still pending when Flush returned
}

// ErrSpoolBusy is returned by Flush when another flush held the lock until
// the context ended.
var ErrSpoolBusy = errors.New("spool is being flushed by another process")

// Flush publishes the spooled pushes in order, removing each once
// published, until the spool is empty (files spooled meanwhile included),
// the context ends, or a publish fails with a retryable error, which
// stops the flush so that nothing overtakes the failed push; that error is
// returned. A file that cannot be decoded or validated, or that the
// destination rejects as invalid, is moved to quarantine/ with a
// ".reason" file and a warning log, and the flush goes on.
func (s *Spool) Flush(ctx context.Context, pub Publisher) (FlushResult, error) {
	var res FlushResult
	unlock, err := s.lock(ctx)
	if err != nil {
		res.Left = s.count()
		return res, err
	}
	defer unlock()
	s.removeStaleTemps()
	for {
		names, err := s.Pending()
		if err != nil || len(names) == 0 {
			return res, err
		}
		for i, name := range names {
			if err := ctx.Err(); err != nil {
				res.Left = len(names) - i
				return res, err
			}
			path := filepath.Join(s.dir, name)
			p, err := readSpooled(path)
			if errors.Is(err, fs.ErrNotExist) {
				continue // flushed by a flush that did not lock (should not happen) or removed by hand
			}
			if err != nil {
				s.quarantine(name, err)
				res.Quarantined++
				continue
			}
			if err := pub.Publish(ctx, p); err != nil {
				if Retryable(err) {
					res.Left = len(names) - i
					return res, err
				}
				s.quarantine(name, err)
				res.Quarantined++
				continue
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				// Left behind, it would be sent again (harmlessly, same id) but
				// forever: stop and say so.
				return res, fmt.Errorf("remove published spool file: %w", err)
			}
			res.Published++
			s.log.Debug("spooled push published", slog.String("push", p.ID), slog.String("repo", p.Repo))
		}
	}
}

func (s *Spool) count() int {
	n, _ := s.Pending()
	return len(n)
}

// MaxSpoolFile bounds what Flush reads of one spool file. The largest push
// the hook writes, bus.MaxUpdatesPerPush updates with every field at its
// limit (a 1 KiB ref, 1 KiB subject and author, three 64-digit ids), is
// about 10,000 × 3.4 KB = 34 MB of JSON; 64 MiB leaves room for escaping.
// A larger file is not a push the hook wrote (a 300 MB one once cost 634
// MB to read whole before being quarantined), so it is quarantined
// unread.
const MaxSpoolFile = 64 << 20

func readSpooled(path string) (*bus.Push, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The size is checked on the open file, so a rename in between cannot
	// swap it; the LimitReader catches a file still growing.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat spool file: %w", err)
	}
	if fi.Size() > MaxSpoolFile {
		return nil, fmt.Errorf("spool file is %d bytes, over the %d-byte limit for one push; not read", fi.Size(), MaxSpoolFile)
	}
	lr := &io.LimitedReader{R: f, N: MaxSpoolFile + 1}
	var p bus.Push
	// The decoder reads the file in pieces, so the file's bytes are held
	// once (the decoder's buffer), not read whole and then copied.
	dec := json.NewDecoder(lr)
	err = dec.Decode(&p)
	if err == nil {
		// Anything but white space after the object is corruption.
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("trailing data")
		}
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("spool file grew past the %d-byte limit for one push while being read", MaxSpoolFile)
	}
	if err != nil {
		return nil, fmt.Errorf("corrupt spool file: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("spooled push is invalid: %w", err)
	}
	return &p, nil
}

// quarantine moves a spool file out of the way so it is not retried
// forever, leaving the reason beside it.
func (s *Spool) quarantine(name string, reason error) {
	to, err := quarantineFile(s.dir, name, name, reason)
	if err == nil {
		err = fsync.Dir(s.dir)
	}
	s.log.Warn("spool file quarantined", slog.String("file", to), slog.String("reason", reason.Error()), slog.Any("move_error", err))
}

// quarantineFile moves dir/name into dir/QuarantineDir as as, with the
// reason in a .reason file beside it, and returns where it went.
func quarantineFile(dir, name, as string, reason error) (string, error) {
	qdir := filepath.Join(dir, QuarantineDir)
	to := filepath.Join(qdir, as)
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		return to, err
	}
	_ = os.WriteFile(to+".reason", []byte(reason.Error()+"\n"), 0o600)
	return to, os.Rename(filepath.Join(dir, name), to)
}

func (s *Spool) removeStaleTemps() {
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), spoolTmpPrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTmp {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}

// lock takes the spool's flock, polling until ctx ends. The lock is
// released by the returned function, or by the kernel if the process dies.
func (s *Spool) lock(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock spool %s: %w", s.dir, err)
	}
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		err := flock.TryLock(f)
		if err == nil {
			return func() {
				_ = flock.Unlock(f)
				f.Close()
			}, nil
		}
		if !errors.Is(err, flock.ErrWouldBlock) {
			f.Close()
			return nil, fmt.Errorf("lock spool %s: %w", s.dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ErrSpoolBusy
		case <-t.C:
		}
	}
}

// DefaultDrainEvery is a sensible period for DrainLoop.
const DefaultDrainEvery = 10 * time.Second

// DrainLoop flushes the spool in dir to pub every period until ctx ends,
// for a node that publishes what hooks could not (`refcast serve --spool
// DIR`). Each flush is bounded by the period. Failures are logged (a
// retryable one at most once until a flush succeeds again) and retried
// on the next tick. It returns when ctx ends; a flush in progress is
// abandoned at once (its file stays spooled).
func DrainLoop(ctx context.Context, dir string, pub Publisher, every time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if every <= 0 {
		every = DefaultDrainEvery
	}
	sp, err := OpenSpool(dir, log)
	if err != nil {
		log.Error("spool drain disabled", slog.Any("error", err))
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		fctx, cancel := context.WithTimeout(ctx, every)
		res, err := sp.Flush(fctx, pub)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !errors.Is(err, ErrSpoolBusy):
			if !failing {
				log.Warn("spool drain failed; will retry", slog.String("spool", dir), slog.Int("pending", res.Left), slog.Any("error", err))
			}
			failing = true
		case res.Published > 0 || failing:
			log.Info("spool drained", slog.String("spool", dir), slog.Int("published", res.Published), slog.Int("quarantined", res.Quarantined))
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
