//go:build linux

package watch

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestExecRunnerCancelKillsGroup: cancelling a command ends its whole
// process group, the shell's background children included. Without the
// group signal, Run would return after KillDelay with a child still
// sleeping; so the check is which processes are left once Run returned,
// not how long it took.
func TestExecRunnerCancelKillsGroup(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	var out bytes.Buffer
	r := &ExecRunner{
		Command:   `echo $$ > "$PIDS"; sleep 300 & echo $! >> "$PIDS"; sleep 300; wait`,
		Environ:   []string{"PATH=" + os.Getenv("PATH"), "PIDS=" + pids},
		Output:    &SyncWriter{W: &out},
		KillDelay: time.Second,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, &Batch{Repo: "acme/app"}) }()
	var started []int
	for len(started) < 2 { // the shell and its background child wrote their pids
		b, _ := os.ReadFile(pids)
		started = started[:0]
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				started = append(started, pid)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled command succeeded")
	}
	// A killed process closes its files before it is gone from /proc, so
	// Run can return a moment before; a survivor (no group signal) would
	// sleep on for 300 s. The 30 s is a hang guard, not a measure.
	for _, pid := range started {
		for deadline := time.Now().Add(30 * time.Second); alive(pid); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("process %d of the command's group still runs after Run returned", pid)
				break
			}
		}
	}
}

// alive reports whether pid exists and is not a zombie waiting for a
// parent that does not reap (PID 1 in some containers).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, so look after the last ')'.
	s := string(b)
	rest := s[strings.LastIndexByte(s, ')')+1:]
	f := strings.Fields(rest)
	return len(f) > 0 && f[0] != "Z"
}
