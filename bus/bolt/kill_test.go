package bolt

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
)

// killChildEnv names the data directory to the child process of
// TestKillNineKeepsAcknowledged.
const killChildEnv = "REFCAST_BOLT_KILL_CHILD"

// TestKillNineKeepsAcknowledged: a process publishing from 8 goroutines at
// once (so commits are shared) is killed with SIGKILL; every push it had
// acknowledged (Publish returned) is in the file afterwards, at the
// position it was acknowledged with, and its id is still remembered.
func TestKillNineKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestKillNineChild$", "-test.count", "1")
	cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type ack struct {
		part int
		seq  uint64
	}
	acked := map[string]ack{}
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ack" {
			continue // the test framework's own lines
		}
		part, err1 := strconv.Atoi(f[2])
		seq, err2 := strconv.ParseUint(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("child line %q", sc.Text())
		}
		acked[f[1]] = ack{part, seq}
		if len(acked) == 300 && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true // the lines already in the pipe are acknowledged too
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("child exited after %d acknowledged pushes, before it was killed", len(acked))
	}

	b := open(t, dir, Options{Partitions: 4})
	for id, a := range acked {
		evs, err := b.History(t.Context(), a.part, heads(t, b)[a.part].Epoch, a.seq-1, 1)
		if err != nil || len(evs) != 1 || evs[0].PushID != id || evs[0].Seq != a.seq {
			t.Fatalf("acknowledged %s at %d/%d: history has %v (%v)", id, a.part, a.seq, evs, err)
		}
		re := publish(t, b, killPush(id))
		if re[0].Partition != a.part || re[0].Seq != a.seq {
			t.Fatalf("acknowledged %s at %d/%d, retried it got %d/%d", id, a.part, a.seq, re[0].Partition, re[0].Seq)
		}
	}
	t.Logf("%d acknowledged pushes, all kept", len(acked))
}

func killPush(id string) *bus.Push {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "k"))
	return bustest.Push(id, fmt.Sprintf("acme/r%d", n%50), "refs/heads/main", bustest.ID(n+1))
}

// TestKillNineChild is the process TestKillNineKeepsAcknowledged kills: it
// publishes until killed and prints each push as Publish acknowledges it.
func TestKillNineChild(t *testing.T) {
	dir := os.Getenv(killChildEnv)
	if dir == "" {
		t.Skip("run by TestKillNineKeepsAcknowledged")
	}
	b, err := Open(dir, Options{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // a guard: the parent kills it long before
	defer cancel()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; ctx.Err() == nil; i += 8 {
				id := fmt.Sprintf("k%d", i)
				evs, err := b.Publish(ctx, killPush(id))
				if err != nil {
					continue
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %s %d %d\n", id, evs[0].Partition, evs[0].Seq)
				_ = w.Flush() // the parent counts it acknowledged once it can read it
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	_ = b.Close()
}
