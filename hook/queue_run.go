package hook

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/refcast/refcast/internal/flock"
)

// Drain is `refcast hook drain --queue DIR`: Queue.Drain on q, each queued
// push run through PostReceive (or, from a reference-transaction script,
// ReferenceTransaction's committed state) as its hook would have run it: in the
// hook's directory, with the environment it carried, r's flags and
// destination on top, under the push id and time of its file. The
// destinations stay open across pushes. What the hook would have told the
// pusher (spooled, rejected) is logged instead.
func (r *Runner) Drain(ctx context.Context, queue *Queue, o DrainOptions) error {
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
		var err error
		if q.Hook == ModeReferenceTransaction {
			// The script queues only a committed transaction whose
			// lines are all verified updates (see queueScript): the
			// prepared state had nothing to record.
			err = rr.ReferenceTransaction(ctx, "committed")
		} else {
			err = rr.PostReceive(ctx)
		}
		for line := range strings.Lines(out.String()) {
			o.Log.Warn(strings.TrimSpace(line), slog.String("file", filepath.Join(queue.Dir(), q.Name)), slog.String("dir", q.Dir))
		}
		if err == nil {
			return nil
		}
		// The push itself, or the repository's settings, are wrong:
		// retrying changes nothing. Anything else (the disk, git, the
		// spool) may pass: retried.
		var st ExitStatus
		var ue *UsageError
		if errors.As(err, &ue) || errors.As(err, &st) && st == 2 {
			return fmt.Errorf("%w: %v", errQuarantine, err)
		}
		return err
	}
	return queue.Drain(ctx, handle, o)
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
	if env["GIT_DIR"] == "" {
		return q.Dir
	}
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

// queueFileRepo reads the head of the queue file at path and returns the
// repository it is for (queuedRepo): "" when the first queueHeadMax bytes
// do not hold the whole header (still being written, or a header that
// long). A header that is not a queue file's is an error wrapping
// errQuarantine; one reading it, a plain error.
func queueFileRepo(path string) (string, error) {
	head, err := readHead(path, queueHeadMax)
	if err != nil {
		return "", err
	}
	qf, err := ParseQueueFile(head)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errQuarantine, err)
	}
	if qf.Dir == "" {
		return "", nil
	}
	return queuedRepo(&QueuedPush{Dir: qf.Dir, Env: qf.Env}), nil
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
		if r, err := queueFileRepo(filepath.Join(dir, e.Name())); err == nil && r == repo {
			n++
		}
	}
	return n
}

// waitQueued holds a push the script could not queue (see queueScript)
// until the queue has published the same repository's pushes written
// before this one begun, so it does not overtake them; at most timeout,
// then it goes ahead with a warning (no drainer is running, or it is far
// behind).
func (r *Runner) waitQueued(ctx context.Context, repo *Repo, timeout time.Duration, begun time.Time) {
	dir := r.env(queueEnvVar)
	if dir == "" || r.pushID != "" {
		return // no queue, or this is the drainer
	}
	deadline := time.Now().Add(cmp.Or(timeout, DefaultTimeout))
	for {
		n := queuedAhead(dir, repo.CommonDir, begun)
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

// checkQueueDir refuses a queue install-hook cannot use: not absolute, a
// control character in the path, not a directory, writable by others
// (the drainer would refuse it). A queue no drainer holds is a warning:
// pushes wait there, safe, until `refcast hook drain` starts.
func checkQueueDir(cmd, dir string, stderr io.Writer) error {
	if !filepath.IsAbs(dir) {
		return usagef("%s: --queue %q: want an absolute path (the hook runs in the repository)", cmd, dir)
	}
	if strings.ContainsFunc(dir, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return usagef("%s: --queue %q: a control character in the path (it goes into the hook script)", cmd, dir)
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return usagef("%s: --queue %s: not a directory; create it (mkdir -m 0700, owned by the user git runs hooks as, who also runs the drainer) and start 'refcast hook drain --queue %s'", cmd, dir, dir)
	}
	if err := queueDirPermError(dir, fi); err != nil {
		return usagef("%s: %v", cmd, err)
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

// queueHeadMax bounds what is read of a queue file to learn its
// repository: the header (a directory and a few variables) and more.
const queueHeadMax = 64 << 10

// readHead reads at most n bytes from the start of a file.
func readHead(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}
