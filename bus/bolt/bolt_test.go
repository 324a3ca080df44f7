package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t testing.TB, dir string, opts Options) *Bus {
	t.Helper()
	b, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestConformance runs the bus conformance suite with the log flushed to
// bbolt as shipped (reads merge the file and the tail), after every
// publish (reads go to the file), and every third one.
func TestConformance(t *testing.T) {
	for _, every := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("flush%d", every), func(t *testing.T) {
			bustest.Run(t, func(t *testing.T, o bustest.Options) bus.Bus {
				return open(t, t.TempDir(), Options{Partitions: o.Partitions, History: o.History, MaxAge: o.MaxAge, flushPushes: every})
			})
		})
	}
}

func publish(t *testing.T, b bus.Bus, p *bus.Push) []bus.Event {
	t.Helper()
	evs, err := b.Publish(t.Context(), p)
	if err != nil {
		t.Fatalf("Publish(%s): %v", p.ID, err)
	}
	return evs
}

func heads(t *testing.T, b bus.Bus) bus.Heads {
	t.Helper()
	h, err := b.Heads(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestRestartKeepsState closes and reopens one directory and checks that
// everything a client resumes from survived: history, ref state, repos,
// epochs, the next Seq and the push ids.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Partitions: 4, History: 5}
	b := open(t, dir, opts)
	var pushes []*bus.Push
	var published [][]bus.Event
	for i := 1; i <= 8; i++ {
		p := bustest.Push(fmt.Sprintf("p%d", i), fmt.Sprintf("acme/r%d", i%3), "refs/heads/main", bustest.ID(i), "refs/tags/v1", bustest.ID(100+i))
		pushes = append(pushes, p)
		published = append(published, publish(t, b, p))
	}
	publish(t, b, bustest.Push("gone", "acme/gone", "refs/heads/main", bustest.ID(7)))
	publish(t, b, bustest.Push("gone2", "acme/gone", "refs/heads/main", ""))
	before := heads(t, b)
	beforeHist := map[int][]bus.Event{}
	beforeRefs := map[string]bus.RefState{}
	for pi, h := range before {
		evs, err := b.History(t.Context(), pi, h.Epoch, h.First-1, 100)
		if err != nil {
			t.Fatal(err)
		}
		beforeHist[pi] = evs
	}
	beforeRepos, _ := b.Repos(t.Context())
	for _, r := range beforeRepos {
		beforeRefs[r], _ = b.Refs(t.Context(), r)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2 := open(t, dir, opts)
	if after := heads(t, b2); !slices.Equal(after, before) {
		t.Fatalf("heads after restart = %+v, want %+v", after, before)
	}
	for pi, h := range before {
		got, err := b2.History(t.Context(), pi, h.Epoch, h.First-1, 100)
		if err != nil {
			t.Fatal(err)
		}
		if !equalEvents(got, beforeHist[pi]) {
			t.Errorf("partition %d history after restart = %v, want %v", pi, got, beforeHist[pi])
		}
	}
	repos, _ := b2.Repos(t.Context())
	if !slices.Equal(repos, beforeRepos) || slices.Contains(repos, "acme/gone") {
		t.Errorf("repos after restart = %v, want %v", repos, beforeRepos)
	}
	for _, r := range repos {
		st, err := b2.Refs(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		want := beforeRefs[r]
		if fmt.Sprint(st) != fmt.Sprint(want) {
			t.Errorf("refs of %s after restart = %+v, want %+v", r, st, want)
		}
	}
	// Push ids are remembered: a republish returns the first positions.
	for i, p := range pushes {
		again := publish(t, b2, p)
		if again[0].Partition != published[i][0].Partition || again[0].Seq != published[i][0].Seq {
			t.Errorf("republish of %s after restart at %d/%d, first at %d/%d", p.ID, again[0].Partition, again[0].Seq, published[i][0].Partition, published[i][0].Seq)
		}
	}
	if h := heads(t, b2); !slices.Equal(h, before) {
		t.Errorf("republishing appended: heads %+v, want %+v", h, before)
	}
	// Seqs continue.
	repo := "acme/r1"
	pi := bus.PartitionOf(repo, 4)
	evs := publish(t, b2, bustest.Push("next", repo, "refs/heads/main", bustest.ID(50)))
	if evs[0].Seq != before[pi].Last+1 {
		t.Errorf("first seq after restart = %d, want %d", evs[0].Seq, before[pi].Last+1)
	}
}

func equalEvents(a, b []bus.Event) bool {
	return slices.EqualFunc(a, b, func(x, y bus.Event) bool {
		return x.Partition == y.Partition && x.Seq == y.Seq && x.PushID == y.PushID && x.Ref == y.Ref &&
			x.New == y.New && x.Kind == y.Kind && x.Time.Equal(y.Time) && x.Pusher == y.Pusher
	})
}

// TestResumeAfterRestart is what a client does: it saw everything up to
// some heads, the node restarts, more is published, and a subscription from
// the old heads gets exactly the later events, no reset.
func TestResumeAfterRestart(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Partitions: 3}
	b := open(t, dir, opts)
	for i := range 6 {
		publish(t, b, bustest.Push(fmt.Sprintf("a%d", i), fmt.Sprintf("acme/x%d", i), "refs/heads/main", bustest.ID(i+1)))
	}
	seen := heads(t, b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2 := open(t, dir, opts)
	var later []bus.Event
	for i := range 9 {
		later = append(later, publish(t, b2, bustest.Push(fmt.Sprintf("b%d", i), fmt.Sprintf("acme/x%d", i), "refs/heads/main", bustest.ID(100+i), "refs/heads/dev", bustest.ID(200+i)))...)
	}
	sub, err := b2.Subscribe(t.Context(), seen)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var got []bus.Event
	timeout := time.After(bustest.Wait)
	for len(got) < len(later) {
		select {
		case m := <-sub.C():
			if m.Reset {
				t.Fatalf("reset %+v after restart; want a resume", m)
			}
			got = append(got, m.Events...)
		case <-timeout:
			t.Fatalf("got %d of %d events", len(got), len(later))
		}
	}
	key := func(e bus.Event) string { return fmt.Sprintf("%d/%08d", e.Partition, e.Seq) }
	sort.Slice(later, func(i, j int) bool { return key(later[i]) < key(later[j]) })
	sort.Slice(got, func(i, j int) bool { return key(got[i]) < key(got[j]) })
	if !equalEvents(got, later) {
		t.Errorf("resumed events = %v\nwant %v", got, later)
	}
	select {
	case m := <-sub.C():
		t.Errorf("extra message %+v", m)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestFreshDirectoryNewEpochs(t *testing.T) {
	a := heads(t, open(t, t.TempDir(), Options{Partitions: 4}))
	b := heads(t, open(t, t.TempDir(), Options{Partitions: 4}))
	for pi := range a {
		if a[pi].Epoch == 0 || a[pi].Epoch == b[pi].Epoch || a[pi].Epoch >= 1<<63 {
			t.Errorf("partition %d epochs %d and %d: want distinct random 63-bit", pi, a[pi].Epoch, b[pi].Epoch)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	garbage := func(t *testing.T, dir string) {
		if err := os.WriteFile(filepath.Join(dir, FileName), []byte(strings.Repeat("not a bolt file\n", 1000)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		opts    Options
		want    error  // errors.Is target, if any
		msg     string // part of the message
	}{
		{"garbage file", garbage, Options{}, ErrCorrupt, "move it aside"},
		{"truncated file", func(t *testing.T, dir string) {
			b := open(t, dir, Options{Partitions: 2})
			for i := range 50 {
				publish(t, b, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i+1)))
			}
			b.Close()
			if err := os.Truncate(filepath.Join(dir, FileName), 4096); err != nil {
				t.Fatal(err)
			}
		}, Options{Partitions: 2}, ErrCorrupt, "unreadable"},
		{"zeroed meta pages", func(t *testing.T, dir string) {
			b := open(t, dir, Options{Partitions: 2})
			b.Close()
			f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(make([]byte, 8192), 0); err != nil {
				t.Fatal(err)
			}
		}, Options{Partitions: 2}, ErrCorrupt, "unreadable"},
		{"scrambled data pages", func(t *testing.T, dir string) {
			b := open(t, dir, Options{Partitions: 2})
			for i := range 50 {
				publish(t, b, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i+1)))
			}
			b.Close()
			scramble(t, filepath.Join(dir, FileName), 2*4096)
		}, Options{Partitions: 2}, ErrCorrupt, "unreadable"},
		{"other partition count", func(t *testing.T, dir string) {
			open(t, dir, Options{Partitions: 4}).Close()
		}, Options{Partitions: 8}, nil, "created with 4 partitions, not 8"},
		{"not a directory", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, Options{}, nil, "not a directory"},
		{"unwritable", func(t *testing.T, dir string) {
			if os.Geteuid() == 0 {
				t.Skip("root ignores permissions")
			}
			if err := os.Chmod(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(dir, 0o700) })
		}, Options{}, os.ErrPermission, "permission denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.prepare(t, dir)
			target := dir
			if tc.name == "not a directory" {
				target = filepath.Join(dir, "file", "sub")
			}
			b, err := Open(target, tc.opts)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %q, want it to say %q", err, tc.msg)
			}
			t.Log(err)
		})
	}
}

// scramble overwrites the file from off on with pseudo-random bytes,
// keeping its size.
func scramble(t *testing.T, path string, off int64) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, info.Size()-off)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	// With a LockTimeout the second Open gives up with ErrLocked instead
	// of waiting for the lock forever (bbolt's default); a hang would be
	// caught by the test binary's -timeout, so no duration is asserted.
	_, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another refcast serve") {
		t.Fatalf("second Open: err = %v, want ErrLocked naming the cause", err)
	}
	t.Log(err)
}

func TestCloseReleasesLock(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, dir, Options{LockTimeout: 100 * time.Millisecond})
}

// TestBoundsOnReopen: lowering History or PushIDs takes effect at Open.
func TestBoundsOnReopen(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 1})
	for i := 1; i <= 10; i++ {
		publish(t, b, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i)))
	}
	b.Close()
	b = open(t, dir, Options{Partitions: 1, History: 3, PushIDs: 2})
	if h := heads(t, b)[0]; h.First != 8 || h.Last != 10 {
		t.Errorf("head after reopening with History 3 = %+v, want First 8 Last 10", h)
	}
	// p1 is forgotten: publishing it again appends.
	if evs := publish(t, b, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))); evs[0].Seq != 11 {
		t.Errorf("forgotten push id published at %d, want 11", evs[0].Seq)
	}
	// p10 is remembered.
	if evs := publish(t, b, bustest.Push("p10", "acme/app", "refs/heads/main", bustest.ID(10))); evs[0].Seq != 10 {
		t.Errorf("remembered push id returned %d, want 10", evs[0].Seq)
	}
}

func TestPushIDWindow(t *testing.T) {
	b := open(t, t.TempDir(), Options{Partitions: 1, PushIDs: 3})
	for i := 1; i <= 5; i++ {
		publish(t, b, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i)))
	}
	// The window holds p3..p5; p2 was forgotten and appends (then p3 drops).
	for _, c := range []struct {
		id   string
		want uint64
	}{{"p5", 5}, {"p3", 3}, {"p2", 6}, {"p3", 7}} {
		if evs := publish(t, b, bustest.Push(c.id, "acme/app", "refs/heads/x", bustest.ID(9))); evs[0].Seq != c.want {
			t.Errorf("%s published at %d, want %d", c.id, evs[0].Seq, c.want)
		}
	}
}

// TestConcurrentReadersSeeCommittedOnly checks the watermark under a
// publisher: every head a reader sees is readable, and ref state is never
// older than a head already seen.
func TestConcurrentReadersSeeCommittedOnly(t *testing.T) {
	b := open(t, t.TempDir(), Options{Partitions: 1, History: 50})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				h := heads(t, b)[0]
				if h.Last == 0 {
					continue
				}
				evs, err := b.History(ctx, 0, h.Epoch, h.Last-1, 10)
				if errors.Is(err, bus.ErrTruncated) || ctx.Err() != nil {
					continue
				}
				if err != nil || len(evs) == 0 || evs[0].Seq != h.Last {
					t.Errorf("head %+v: history %v, %v", h, evs, err)
					return
				}
				st, err := b.Refs(ctx, "acme/app")
				if err == nil && st.Seq < h.Last {
					t.Errorf("refs at %d after heads at %d", st.Seq, h.Last)
					return
				}
			}
		})
	}
	for i := 1; i <= 100; i++ {
		publish(t, b, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i)))
	}
	cancel()
	wg.Wait()
}

// BenchmarkPublish is the latency a push adds on this disk: one bbolt
// commit, fsync included, per Publish of a 3-ref push into a full
// history and a full push id window (so each publish also trims, as on a
// node that has run a while). It also prints the process's CPU time per
// publish (cpu-µs/op, fsync's kernel work included) and bbolt's page
// writes per publish (writes/op), what the node pays per event.
//
//	go test -run '^$' -bench Publish -benchtime 2000x ./bus/bolt/
func BenchmarkPublish(b *testing.B) {
	for _, sync := range []bool{true, false} {
		name := "fsync"
		if !sync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			bb := open(b, b.TempDir(), Options{History: 1000, PushIDs: 10000, noSync: !sync})
			ctx := context.Background()
			mk := func(i int) *bus.Push {
				return bustest.Push(fmt.Sprintf("b%d", i), fmt.Sprintf("acme/repo%d", i%64),
					"refs/heads/main", bustest.ID(i+1), "refs/heads/dev", bustest.ID(i+2), "refs/tags/v1", bustest.ID(i+3))
			}
			bb.db.NoSync, bb.w.noSync = true, true // fill every partition's history, quickly
			for i := range 20000 {
				if _, err := bb.Publish(ctx, mk(1_000_000+i)); err != nil {
					b.Fatal(err)
				}
			}
			bb.db.NoSync, bb.w.noSync = !sync, !sync
			lat := make([]time.Duration, 0, b.N)
			writes0, cpu0 := txWrites(bb), cpuTime(b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				if _, err := bb.Publish(ctx, mk(i)); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			n := float64(len(lat))
			b.ReportMetric(float64(txWrites(bb)-writes0)/n, "writes/op")
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/n, "cpu-µs/op")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// cpuTime is the process's CPU time so far (user and system): what a
// publish costs the node, fsync's kernel work included, where ns/op is its
// latency.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// txWrites is how many page writes bbolt has made so far.
func txWrites(b *Bus) int64 {
	st := b.db.Stats()
	return st.TxStats.GetWrite()
}

// TestFeedFromMemoryMatchesFile: a caught-up feed takes a commit's events
// from memory (Bus.recent); they are the events a read of the file gives,
// field for field, so a subscriber cannot tell the two paths apart.
func TestFeedFromMemoryMatchesFile(t *testing.T) {
	b := open(t, t.TempDir(), Options{Partitions: 2})
	sub, err := b.Subscribe(t.Context(), heads(t, b))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	forced, commits := true, 3
	p := bustest.Push("m1", "acme/app", "refs/heads/main", bustest.ID(1), "refs/tags/v1", bustest.ID(2))
	p.Updates[0].Forced, p.Updates[0].Commits = &forced, &commits
	p.Updates[0].Commit = &bus.Commit{Subject: "fix", Author: "eve", Time: time.Date(2026, 11, 25, 14, 0, 0, 0, time.FixedZone("x", 7200))}
	want := publish(t, b, p)
	var got []bus.Event
	for len(got) < len(want) {
		select {
		case m := <-sub.C():
			got = append(got, m.Events...)
		case <-time.After(30 * time.Second):
			t.Fatalf("feed gave %d of %d events", len(got), len(want))
		}
	}
	h := heads(t, b)[want[0].Partition]
	file, err := b.History(t.Context(), want[0].Partition, h.Epoch, want[0].Seq-1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(file) != len(got) {
		t.Fatalf("file has %d events, feed gave %d", len(file), len(got))
	}
	for i := range got {
		gj, _ := json.Marshal(got[i])
		fj, _ := json.Marshal(file[i])
		if string(gj) != string(fj) || got[i].Partition != file[i].Partition || got[i].Seq != file[i].Seq ||
			got[i].Prev != file[i].Prev || got[i].Chain != file[i].Chain {
			t.Errorf("event %d from memory %s %d/%d prev %x chain %x, from the file %s %d/%d prev %x chain %x",
				i, gj, got[i].Partition, got[i].Seq, got[i].Prev, got[i].Chain, fj, file[i].Partition, file[i].Seq, file[i].Prev, file[i].Chain)
		}
	}
}
