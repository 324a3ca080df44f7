package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/refcast/refcast/hook"
	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// BenchmarkPushLatency measures what the hook costs a real `git push` (the
// git binary, the local file transport, the real refcast binary as the
// post-receive hook) and how soon the push reaches an SSE client, on the
// embedded default (hook --url, node --publish-token) and on Redis (hook
// --redis straight into the bus).
//
// Each iteration commits one small change in three clones and pushes each
// to its own bare repository, in an order that rotates every iteration so
// no repository always goes first:
//
//   - plain: no hook;
//   - hooked: the hook as install-hook writes it; hook-added is its push
//     time minus plain's in the same iteration (paired, so machine noise
//     shared by the two cancels out);
//   - traced: the same hook, pushed with GIT_TRACE2_EVENT so git records
//     when receive-pack starts the hook (child_start) and how long it runs
//     (child_exit t_rel); hook-to-sse is from that start to the moment the
//     SSE client reads the event's frame (both on the wall clock of this
//     machine). Tracing perturbs that push a little, so it is not used for
//     hook-added.
//
// The -queue variants install the hook with --queue (the script writes
// the push to a queue directory with shell builtins and exits) and let a
// long-running process publish it: the node itself on the embedded bus
// (serve --queue), `refcast hook drain --queue` on Redis. The same
// figures, so the two ways compare side by side in one run.
//
// Each iteration also times `refcast version` (start-ms): the process's
// start and exit alone (exec, Go runtime, every linked package's init),
// the floor under hook-run-ms that no work in the hook can remove.
//
// The binary is built as it ships (testnode.BuildShipped), not as testnode.Build
// builds it for tests: the hook's cost is mostly the process start, which
// depends on how the binary is linked.
//
// The built-in ns/op (a whole iteration: three commits, three pushes) is
// suppressed; the figures are the p50/p90 metrics.
func BenchmarkPushLatency(b *testing.B) {
	testnode.Require(b, "git")
	bin := testnode.BuildShipped(b)
	b.Run("embedded", func(b *testing.B) {
		const token = "bench-token"
		node := testnode.Start(b, bin, "", "--data", b.TempDir(), "--publish-token", token, "--drain", "100ms")
		benchPushLatency(b, bin, node, token, "--url", node.URL)
	})
	b.Run("redis", func(b *testing.B) {
		testnode.Require(b, "redis-server")
		rs := redistest.Start(b, redistest.Options{})
		node := testnode.Start(b, bin, "", "--redis", rs.URL(), "--drain", "100ms")
		benchPushLatency(b, bin, node, "", "--redis", rs.URL())
	})
	// The queue, with each hook. The reference-transaction hook runs twice
	// a push (prepared, committed) and the script queues the committed
	// state of these fast-forwards; hook-run and hook-to-sse are the
	// committed state's.
	for _, v := range []struct{ suffix, mode string }{
		{"", hook.ModePostReceive},
		{"-reftxn", hook.ModeReferenceTransaction},
	} {
		// On the embedded bus the node drains it (serve --queue),
		// publishing into its own bus.
		b.Run("embedded-queue"+v.suffix, func(b *testing.B) {
			const token = "bench-token"
			queue := newQueueDir(b)
			node := testnode.Start(b, bin, "", "--data", b.TempDir(), "--publish-token", token, "--drain", "100ms", "--queue", queue)
			benchPushLatency(b, bin, node, token, "--url", node.URL, "--queue", queue, "--mode", v.mode)
		})
		// On Redis `refcast hook drain` on the git host publishes into
		// the bus, the nodes being elsewhere.
		b.Run("redis-queue"+v.suffix, func(b *testing.B) {
			testnode.Require(b, "redis-server")
			rs := redistest.Start(b, redistest.Options{})
			node := testnode.Start(b, bin, "", "--redis", rs.URL(), "--drain", "100ms")
			queue := newQueueDir(b)
			startDrainer(b, bin, queue)
			benchPushLatency(b, bin, node, "", "--redis", rs.URL(), "--queue", queue, "--mode", v.mode)
		})
	}
}

func newQueueDir(b *testing.B) string {
	queue := filepath.Join(b.TempDir(), "queue")
	if err := os.Mkdir(queue, 0o755); err != nil {
		b.Fatal(err)
	}
	return queue
}

// startDrainer runs `refcast hook drain --queue` on queue until the
// benchmark ends.
func startDrainer(b *testing.B, bin, queue string) {
	b.Helper()
	dir := b.TempDir()
	logf, err := os.Create(filepath.Join(dir, "drain.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "hook", "drain", "--queue", queue)
	cmd.Env = gitEnvFor(dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if b.Failed() {
			data, _ := os.ReadFile(logf.Name())
			b.Logf("drain log:\n%s", data)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !hook.QueueDrained(queue); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("refcast hook drain did not take the queue within 10s")
		}
	}
}

// benchRepo is a bare repository and a clone pushing to it.
type benchRepo struct {
	name       string
	bare, work string
	tap        *sseTap // nil without a hook
}

func newBenchRepo(b *testing.B, bin, dir, name, token string, node *testnode.Node, dest ...string) *benchRepo {
	b.Helper()
	r := &benchRepo{name: name, bare: filepath.Join(dir, name+".git"), work: filepath.Join(dir, name)}
	testnode.Git(b, dir, nil, "init", "-q", "--bare", "-b", "main", r.bare)
	if len(dest) > 0 {
		args := append([]string{"install-hook", r.bare, "--repo", "bench/" + name}, dest...)
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			b.Fatalf("refcast %v: %v\n%s", args, err, out)
		}
		if token != "" {
			testnode.Git(b, r.bare, nil, "config", "refcast.token", token)
		}
		r.tap = newSSETap(b, node.URL+"/v1/events?repo=bench/"+name)
		r.tap.waitHello(b, 10*time.Second)
	}
	testnode.Git(b, dir, nil, "clone", "-q", r.bare, r.work)
	return r
}

// push commits a change and pushes it; it returns the push's wall time and,
// for a hooked repository, waits for the event on the SSE client.
func (r *benchRepo) push(b *testing.B, msg string, env ...string) (time.Duration, sseArrival) {
	b.Helper()
	sha := commitFile(b, r.work, msg)
	took, stderr, err := gitPush(r.work, "HEAD:main", env...)
	if err != nil || stderr != "" {
		b.Fatalf("push %s: %v\n%s", r.name, err, stderr)
	}
	if r.tap == nil {
		return took, sseArrival{}
	}
	for {
		a := r.tap.next(b, 10*time.Second)
		if a.ev.New == sha {
			return took, a
		}
	}
}

func benchPushLatency(b *testing.B, bin string, node *testnode.Node, token string, dest ...string) {
	dir := b.TempDir()
	plain := newBenchRepo(b, bin, dir, "plain", token, node)
	hooked := newBenchRepo(b, bin, dir, "hooked", token, node, dest...)
	traced := newBenchRepo(b, bin, dir, "traced", token, node, dest...)
	hookName := hook.ModePostReceive
	if slices.Contains(dest, hook.ModeReferenceTransaction) {
		hookName = hook.ModeReferenceTransaction
	}
	trace := filepath.Join(dir, "trace2.json")
	traceEnv := "GIT_TRACE2_EVENT=" + trace
	// Warm up: the first push creates main; page cache, connection set-up.
	for i := range 3 {
		for _, r := range []*benchRepo{plain, hooked, traced} {
			r.push(b, fmt.Sprintf("warm-up %d", i))
		}
	}

	var plainMs, hookedMs, addedMs, ratio, hookRunMs, hookToSSEMs, startMs []float64
	i := 0
	for b.Loop() {
		var tPlain, tHooked time.Duration
		for k := range 3 {
			switch (i + k) % 3 {
			case 0:
				tPlain, _ = plain.push(b, fmt.Sprintf("change %d", i))
			case 1:
				tHooked, _ = hooked.push(b, fmt.Sprintf("change %d", i))
			case 2:
				_ = os.Remove(trace)
				_, a := traced.push(b, fmt.Sprintf("change %d", i), traceEnv)
				start, run := hookTrace(b, trace, hookName)
				hookRunMs = append(hookRunMs, ms(run))
				hookToSSEMs = append(hookToSSEMs, ms(a.at.Sub(start)))
			}
		}
		plainMs = append(plainMs, ms(tPlain))
		hookedMs = append(hookedMs, ms(tHooked))
		addedMs = append(addedMs, ms(tHooked-tPlain))
		ratio = append(ratio, float64(tHooked)/float64(tPlain))
		t0 := time.Now()
		if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
			b.Fatalf("refcast version: %v\n%s", err, out)
		}
		startMs = append(startMs, ms(time.Since(t0)))
		i++
	}
	b.ReportMetric(0, "ns/op")
	for _, m := range []struct {
		name string
		v    []float64
	}{
		{"push-ms", plainMs},
		{"push-hook-ms", hookedMs},
		{"hook-added-ms", addedMs},
		{"hook-ratio", ratio},
		{"hook-run-ms", hookRunMs},
		{"hook-to-sse-ms", hookToSSEMs},
		{"start-ms", startMs},
	} {
		b.ReportMetric(percentile(m.v, 50), m.name+"-p50")
		b.ReportMetric(percentile(m.v, 90), m.name+"-p90")
	}
}

// hookTrace reads a GIT_TRACE2_EVENT file and returns when receive-pack
// last started the named hook (reference-transaction runs more than once
// a push; its committed state comes last) and how long that run took.
func hookTrace(b *testing.B, path, name string) (time.Time, time.Duration) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	type event struct {
		Event      string  `json:"event"`
		SID        string  `json:"sid"`
		Time       string  `json:"time"`
		ChildID    int     `json:"child_id"`
		ChildClass string  `json:"child_class"`
		HookName   string  `json:"hook_name"`
		TRel       float64 `json:"t_rel"`
	}
	var start *event
	var at time.Time
	var took time.Duration
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		switch {
		case e.Event == "child_start" && e.ChildClass == "hook" && e.HookName == name:
			start = &e
		case e.Event == "child_exit" && start != nil && e.SID == start.SID && e.ChildID == start.ChildID:
			t, err := time.Parse(time.RFC3339Nano, start.Time)
			if err != nil {
				b.Fatalf("trace2 time %q: %v", start.Time, err)
			}
			at, took = t, time.Duration(e.TRel*float64(time.Second))
			start = nil
		}
	}
	if at.IsZero() {
		b.Fatalf("no %s child_start/child_exit pair in %s", name, path)
	}
	return at, took
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile (nearest rank) of v.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	k := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(k, 0), len(s)-1)]
}
