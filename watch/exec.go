package watch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Batch is what one command run handles: one event, the events of one
// debounce window of one repo, or a reset.
type Batch struct {
	// Repo is the repo of the events; for a reset, the snapshot's repos
	// separated by spaces (repo names cannot contain one).
	Repo string
	// Ref, Old, New, Kind, Pusher and Forced describe the last event of the
	// batch. Kind is "reset" for a reset. Forced is "true", "false" or empty
	// when unknown.
	Ref, Old, New, Kind, Pusher, Forced string
	// Cursor is the id of the last frame in the batch.
	Cursor string
	// Count is the number of events in the batch (1 for a reset).
	Count int
	// Stdin is the event JSON as received, a JSON array of the events when
	// debouncing, or the reset payload.
	Stdin []byte
}

// Env returns the batch as REFCAST_* variables.
func (b *Batch) Env() []string {
	return []string{
		"REFCAST_REPO=" + b.Repo,
		"REFCAST_REF=" + b.Ref,
		"REFCAST_OLD=" + b.Old,
		"REFCAST_NEW=" + b.New,
		"REFCAST_KIND=" + b.Kind,
		"REFCAST_PUSHER=" + b.Pusher,
		"REFCAST_CURSOR=" + b.Cursor,
		"REFCAST_FORCED=" + b.Forced,
		"REFCAST_EVENT_COUNT=" + strconv.Itoa(b.Count),
	}
}

// Runner handles a batch. A non-nil error makes the Watcher retry the
// batch. Run must return soon after ctx is done. Implementations must be
// safe for concurrent use: batches of different repos run in parallel.
type Runner interface {
	Run(ctx context.Context, b *Batch) error
}

// DefaultKillDelay is how long an ExecRunner waits after SIGTERM before
// SIGKILL when its context is cancelled.
const DefaultKillDelay = 5 * time.Second

// ExecRunner runs Command with "sh -c" per batch: the batch's REFCAST_*
// variables added to Environ, the batch's Stdin on its standard input, and
// its output on Output.
type ExecRunner struct {
	Command string
	// Environ is the base environment (os.Environ() in the CLI). Every
	// REFCAST_* variable in it is dropped so the command never sees the
	// watcher's own settings or token.
	Environ []string
	// Output gets the command's stdout and stderr (the watcher's stderr in
	// the CLI, so stdout stays one event per line). It must be safe for
	// concurrent writes.
	Output io.Writer
	// KillDelay is the wait between SIGTERM and SIGKILL after ctx is done;
	// 0 means DefaultKillDelay.
	KillDelay time.Duration
}

// Run runs the command once and returns an error for a non-zero exit.
func (r *ExecRunner) Run(ctx context.Context, b *Batch) error {
	cmd := exec.CommandContext(ctx, "sh", "-c", r.Command)
	env := make([]string, 0, len(r.Environ)+9)
	for _, kv := range r.Environ {
		if !strings.HasPrefix(kv, "REFCAST_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, b.Env()...)
	cmd.Stdin = bytes.NewReader(b.Stdin)
	cmd.Stdout, cmd.Stderr = r.Output, r.Output
	cmd.WaitDelay = r.KillDelay
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = DefaultKillDelay
	}
	setProcessGroup(cmd)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("command for %s: %w", b.Repo, err)
	}
	return nil
}

// SyncWriter serialises writes to W, for output shared by log lines and
// concurrent commands.
type SyncWriter struct {
	mu sync.Mutex
	W  io.Writer
}

func (w *SyncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.W.Write(p)
}
