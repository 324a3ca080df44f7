package hook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

func testPush(i int) *bus.Push {
	return &bus.Push{
		ID: fmt.Sprintf("p-test-%04d", i), Repo: "acme/app", Time: time.Unix(1700000000, 0).UTC(), Source: SourcePostReceive,
		Updates: []bus.RefUpdate{{Ref: fmt.Sprintf("refs/heads/b%d", i), Old: z1, New: idA}},
	}
}

// recPub records what it publishes and fails while fail is set.
type recPub struct {
	mu   sync.Mutex
	ids  []string
	fail error
}

func (p *recPub) Publish(_ context.Context, push *bus.Push) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.ids = append(p.ids, push.ID)
	return nil
}

func (p *recPub) got() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ids...)
}

func TestSpoolOrderAndFlush(t *testing.T) {
	t.Parallel()
	sp, err := OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := sp.Write(testPush(i)); err != nil {
			t.Fatal(err)
		}
	}
	pub := &recPub{fail: errors.New("node down")}
	res, err := sp.Flush(context.Background(), pub)
	if err == nil || res.Published != 0 || res.Left != 20 {
		t.Fatalf("flush while down: %+v, %v", res, err)
	}
	pub.fail = nil
	res, err = sp.Flush(context.Background(), pub)
	if err != nil || res.Published != 20 {
		t.Fatalf("flush: %+v, %v", res, err)
	}
	for i, id := range pub.got() {
		if id != testPush(i).ID {
			t.Fatalf("published out of order at %d: %v", i, pub.got())
		}
	}
	if left, _ := sp.Pending(); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
}

func TestSpoolConcurrentWritersLoseNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	pub := &recPub{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A flusher runs all along, as hooks of concurrent pushes would.
	var flushes sync.WaitGroup
	flushes.Go(func() {
		sp, _ := OpenSpool(dir, nil)
		for ctx.Err() == nil {
			sp.Flush(ctx, pub)
			time.Sleep(time.Millisecond)
		}
	})
	for w := range writers {
		wg.Go(func() {
			sp, err := OpenSpool(dir, nil) // one Spool per "process"
			if err != nil {
				t.Error(err)
				return
			}
			for i := range each {
				if _, err := sp.Write(testPush(w*each + i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	cancel()
	flushes.Wait()
	sp, _ := OpenSpool(dir, nil)
	if _, err := sp.Flush(context.Background(), pub); err != nil {
		t.Fatal(err)
	}
	got := pub.got()
	sort.Strings(got)
	if len(got) != writers*each {
		t.Fatalf("published %d pushes, want %d", len(got), writers*each)
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Fatalf("published %s twice", got[i])
		}
	}
}

func TestSpoolTwoFlushersDoNotDoubleSend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, nil)
	for i := range 50 {
		sp.Write(testPush(i))
	}
	pub := &recPub{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, _ := OpenSpool(dir, nil)
			if _, err := s.Flush(context.Background(), pub); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := len(pub.got()); n != 50 {
		t.Fatalf("published %d times, want 50", n)
	}
}

func TestSpoolQuarantine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, nil)
	sp.Write(testPush(1))
	// A corrupt file that sorts between the two good ones.
	names, _ := sp.Pending()
	corrupt := names[0][:len(names[0])-len(spoolExt)] + "x" + spoolExt
	os.WriteFile(filepath.Join(dir, corrupt), []byte(`{"id":"p-1","repo":`), 0o600)
	invalid := strings.Replace(names[0], "-", "-y", 1)
	os.WriteFile(filepath.Join(dir, invalid), []byte(`{"id":"p-2","repo":"a b","time":"2026-01-01T00:00:00Z","updates":[]}`), 0o600)
	sp.Write(testPush(2))
	pub := &recPub{}
	res, err := sp.Flush(context.Background(), pub)
	if err != nil || res.Published != 2 || res.Quarantined != 2 {
		t.Fatalf("flush: %+v, %v", res, err)
	}
	for _, n := range []string{corrupt, invalid} {
		reason, err := os.ReadFile(filepath.Join(dir, QuarantineDir, n+".reason"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, QuarantineDir, n)); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", n, reason)
	}
	// Not retried: a second flush has nothing to do.
	if res, _ := sp.Flush(context.Background(), pub); res.Published+res.Quarantined != 0 {
		t.Fatalf("second flush did %+v", res)
	}
}

// TestSpoolOversizedFileQuarantinedUnread: a spool file over MaxSpoolFile
// is quarantined from its size alone, without being read (a 300 MB file
// once cost 634 MB), with a log line saying why, and the flush goes on.
// Not parallel: it measures the process's allocations.
func TestSpoolOversizedFileQuarantinedUnread(t *testing.T) {
	dir := t.TempDir()
	var logBuf strings.Builder
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logBuf.Write(b)
	}), nil))
	sp, _ := OpenSpool(dir, log)
	huge := "00000000000000000000-0000000000-00000000-00000000" + spoolExt // sorts first
	const size = 300 << 20
	f, err := os.Create(filepath.Join(dir, huge))
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: costs no disk, and reads as 300 MB of zero bytes.
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sp.Write(testPush(1))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pub := &recPub{}
	res, err := sp.Flush(context.Background(), pub)
	runtime.ReadMemStats(&after)
	if err != nil || res.Published != 1 || res.Quarantined != 1 {
		t.Fatalf("flush: %+v, %v", res, err)
	}
	// The bound is far below the file (reading it once is 300 MiB) and
	// far above what a flush of one small push allocates.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Fatalf("flush allocated %d bytes for a %d-byte spool file; it must not read it", alloc, size)
	}
	if fi, err := os.Stat(filepath.Join(dir, QuarantineDir, huge)); err != nil || fi.Size() != size {
		t.Fatalf("oversized file not quarantined: %v", err)
	}
	reason, _ := os.ReadFile(filepath.Join(dir, QuarantineDir, huge+".reason"))
	want := fmt.Sprintf("spool file is %d bytes, over the %d-byte limit for one push; not read", size, MaxSpoolFile)
	if !strings.Contains(string(reason), want) {
		t.Fatalf("reason %q, want %q", reason, want)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if line := logBuf.String(); !strings.Contains(line, "spool file quarantined") || !strings.Contains(line, want) {
		t.Fatalf("log %q lacks the quarantine line", line)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestSpoolTrailingDataQuarantined: anything but white space after the
// push object is corruption, a stray '}' included.
func TestSpoolTrailingDataQuarantined(t *testing.T) {
	t.Parallel()
	good, _ := json.Marshal(testPush(1))
	for _, tc := range []struct {
		name, tail string
		bad        bool
	}{
		{"white space", " \n", false},
		{"second object", `{}`, true},
		{"stray brace", `}`, true},
		{"garbage", "x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a"+spoolExt)
			os.WriteFile(path, append(bytes.Clone(good), tc.tail...), 0o600)
			_, err := readSpooled(path)
			if tc.bad != (err != nil) {
				t.Fatalf("readSpooled = %v, want error %v", err, tc.bad)
			}
		})
	}
}

func TestSpoolRejectedIsQuarantinedNotRetried(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, nil)
	sp.Write(testPush(1))
	sp.Write(testPush(2))
	pub := &recPub{fail: fmt.Errorf("node says: %w: bad", bus.ErrInvalid)}
	res, err := sp.Flush(context.Background(), pub)
	if err != nil || res.Quarantined != 2 {
		t.Fatalf("flush: %+v, %v", res, err)
	}
}

func TestDrainLoop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, nil)
	sp.Write(testPush(1))
	pub := &recPub{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { DrainLoop(ctx, dir, pub, 5*time.Millisecond, nil); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	for len(pub.got()) == 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	sp.Write(testPush(2))
	for len(pub.got()) < 2 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	<-done
	if got := pub.got(); len(got) != 2 {
		t.Fatalf("drained %v", got)
	}
}
