package watch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/refcast/refcast/bus"
)

// script is a Source that delivers frames, with pauses, then idles until
// ctx is done, like a live stream.
type script struct {
	steps []step
}

type step struct {
	wait  time.Duration
	frame Frame
}

func (s *script) Run(ctx context.Context, handle Handler) error {
	for _, st := range s.steps {
		if st.wait > 0 {
			if err := sleepCtx(ctx, st.wait); err != nil {
				return err
			}
		}
		if err := handle(ctx, st.frame); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func refFrame(n int, repo, ref string) Frame {
	ev := bus.Event{V: 1, Repo: repo, Ref: ref, Kind: bus.KindUpdate, PushID: "p",
		Old: strings.Repeat("1", 40), New: fmt.Sprintf("%040d", n), Time: time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)}
	b, _ := json.Marshal(ev)
	return Frame{Event: "ref", ID: fmt.Sprintf("c%d", n), Data: b}
}

// fakeRunner records batches; each run takes d and fails while fail says so.
type fakeRunner struct {
	d    time.Duration
	fail func(b *Batch, call int) bool

	mu       sync.Mutex
	batches  []*Batch
	calls    int
	running  map[string]int
	overlap  bool
	maxTotal int
	total    int
}

func (r *fakeRunner) Run(ctx context.Context, b *Batch) error {
	r.mu.Lock()
	r.calls++
	call := r.calls
	if r.running == nil {
		r.running = map[string]int{}
	}
	r.running[b.Repo]++
	if r.running[b.Repo] > 1 {
		r.overlap = true
	}
	r.total++
	r.maxTotal = max(r.maxTotal, r.total)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running[b.Repo]--
		r.total--
		r.mu.Unlock()
	}()
	select {
	case <-time.After(r.d):
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.fail != nil && r.fail(b, call) {
		return errors.New("exit status 1")
	}
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.mu.Unlock()
	return nil
}

func (r *fakeRunner) got() []*Batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Batch(nil), r.batches...)
}

// runFor runs w over src for d of (fake) time and returns Run's error.
func runFor(w *Watcher, src Source, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return w.Run(ctx, src)
}

func TestWatcherDebounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var steps []step
		for i := 1; i <= 500; i++ { // one push of 500 tags
			steps = append(steps, step{frame: refFrame(i, "acme/app", fmt.Sprintf("refs/tags/v%d", i))})
		}
		steps = append(steps, step{wait: 500 * time.Millisecond, frame: refFrame(501, "acme/other", "refs/heads/main")})
		steps = append(steps, step{wait: 5 * time.Second, frame: refFrame(502, "acme/app", "refs/heads/main")})
		r := &fakeRunner{d: 100 * time.Millisecond}
		dir := t.TempDir()
		state := filepath.Join(dir, "state")
		w := New(Config{Runner: r, Debounce: 2 * time.Second, StatePath: state})
		if err := runFor(w, &script{steps: steps}, time.Minute); err != nil {
			t.Fatal(err)
		}
		got := r.got()
		if len(got) != 3 {
			t.Fatalf("%d runs, want 3 (500 tags in one window, another repo, a later event)", len(got))
		}
		b := got[0]
		if b.Repo != "acme/app" || b.Count != 500 || b.Cursor != "c500" || b.Ref != "refs/tags/v500" {
			t.Errorf("first run %+v", b)
		}
		var arr []bus.Event
		if err := json.Unmarshal(b.Stdin, &arr); err != nil || len(arr) != 500 || arr[0].Ref != "refs/tags/v1" {
			t.Errorf("stdin: %d events, err %v", len(arr), err)
		}
		if got[1].Repo != "acme/other" || got[2].Count != 1 || !bytes.HasPrefix(got[2].Stdin, []byte("[{")) {
			t.Errorf("later runs %+v %+v", got[1], got[2])
		}
		if c, err := LoadState(state); c != "c502" || err != nil {
			t.Errorf("state = %q, %v", c, err)
		}
	})
}

func TestWatcherNoOverlapPerRepo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var steps []step
		for i := 1; i <= 40; i++ {
			steps = append(steps, step{frame: refFrame(i, fmt.Sprintf("acme/r%d", i%4), "refs/heads/main")})
		}
		r := &fakeRunner{d: time.Second}
		w := New(Config{Runner: r, Parallel: 3})
		if err := runFor(w, &script{steps: steps}, time.Minute); err != nil {
			t.Fatal(err)
		}
		got := r.got()
		if len(got) != 40 || r.overlap || r.maxTotal != 3 {
			t.Fatalf("runs=%d overlap=%v max parallel=%d, want 40 runs, no overlap, 3 at once", len(got), r.overlap, r.maxTotal)
		}
		// Per repo, events run in stream order, one per run without debounce.
		last := map[string]int{}
		for _, b := range got {
			var n int
			fmt.Sscanf(b.Cursor, "c%d", &n)
			if n <= last[b.Repo] || b.Count != 1 || b.Stdin[0] != '{' {
				t.Fatalf("batch %+v out of order or not single", b)
			}
			last[b.Repo] = n
		}
	})
}

func TestWatcherRetries(t *testing.T) {
	tests := []struct {
		name      string
		failCalls int // the first failCalls calls fail
		skip      bool
		wantErr   bool
		wantState string
		wantRuns  int
	}{
		{name: "recovers", failCalls: 2, wantState: "c2", wantRuns: 2},
		{name: "gives up", failCalls: 100, wantErr: true, wantState: "", wantRuns: 0},
		{name: "skips", failCalls: 4, skip: true, wantState: "c2", wantRuns: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				state := filepath.Join(t.TempDir(), "state")
				r := &fakeRunner{fail: func(_ *Batch, call int) bool { return call <= tt.failCalls }}
				w := New(Config{Runner: r, Retries: 3, RetryBase: time.Second, RetryMax: 4 * time.Second, SkipFailed: tt.skip, StatePath: state})
				src := &script{steps: []step{{frame: refFrame(1, "acme/app", "refs/heads/a")}, {frame: refFrame(2, "acme/app", "refs/heads/b")}}}
				err := runFor(w, src, time.Minute)
				if (err != nil) != tt.wantErr {
					t.Fatalf("Run = %v", err)
				}
				if c, _ := LoadState(state); c != tt.wantState {
					t.Errorf("state = %q, want %q", c, tt.wantState)
				}
				if n := len(r.got()); n != tt.wantRuns {
					t.Errorf("%d successful runs, want %d", n, tt.wantRuns)
				}
			})
		})
	}
}

// The stored cursor never passes an event whose command has not succeeded,
// even when later events of other repos are done.
func TestWatcherStateWatermark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "state")
		slow := &fakeRunner{d: 10 * time.Second}
		w := New(Config{Runner: slow, StatePath: state, Since: "c0"})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			done <- w.Run(ctx, &script{steps: []step{
				{frame: Frame{Event: "hello", ID: "c0"}},
				{frame: refFrame(1, "acme/slow", "refs/heads/main")},
				{frame: refFrame(2, "acme/fast", "refs/heads/main")},
			}})
		}()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if c, _ := LoadState(state); c != "" {
			t.Errorf("state %q saved while c1 is still running", c)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if c, _ := LoadState(state); c != "c2" {
			t.Errorf("state = %q after both ran, want c2", c)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestWatcherShutdown(t *testing.T) {
	tests := []struct {
		name      string
		runFor    time.Duration
		grace     time.Duration
		wantState string
	}{
		{name: "waits for the command", runFor: 5 * time.Second, grace: 10 * time.Second, wantState: "c1"},
		{name: "cancels after grace", runFor: time.Minute, grace: 2 * time.Second, wantState: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				state := filepath.Join(t.TempDir(), "state")
				r := &fakeRunner{d: tt.runFor}
				w := New(Config{Runner: r, Debounce: time.Second, StatePath: state, Grace: tt.grace})
				start := time.Now()
				// c2 arrives while c1 runs: it is pending when the stop
				// comes, so it must not run and the state stays before it.
				err := runFor(w, &script{steps: []step{
					{frame: refFrame(1, "acme/app", "refs/heads/main")},
					{wait: 2 * time.Second, frame: refFrame(2, "acme/app", "refs/heads/main")},
				}}, 2500*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				if c, _ := LoadState(state); c != tt.wantState {
					t.Errorf("state = %q, want %q", c, tt.wantState)
				}
				if el := time.Since(start); el > 2500*time.Millisecond+tt.grace {
					t.Errorf("Run took %v", el)
				}
				if len(r.got()) > 1 {
					t.Errorf("%d runs after the stop", len(r.got()))
				}
			})
		})
	}
}

func TestWatcherReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "state")
		r := &fakeRunner{d: time.Second}
		reset := `{"reason":"cursor is older than the retained history","cursor":"c9","repos":[{"repo":"acme/app","refs":{"refs/heads/main":"` + strings.Repeat("a", 40) + `"}},{"repo":"acme/lib","refs":{}}]}`
		var out bytes.Buffer
		w := New(Config{Out: &out, Runner: r, Debounce: time.Minute, StatePath: state,
			now: func() time.Time { return time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC) }})
		err := runFor(w, &script{steps: []step{
			{frame: refFrame(1, "acme/app", "refs/heads/main")},
			{frame: Frame{Event: "reset", ID: "c9", Data: []byte(reset)}},
		}}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := r.got()
		if len(got) != 2 || got[0].Cursor != "c1" {
			t.Fatalf("runs %+v, want the pending event first (not after its minute-long window), then the reset", got)
		}
		b := got[1]
		if b.Kind != "reset" || b.Repo != "acme/app acme/lib" || b.Cursor != "c9" || b.Count != 1 || string(b.Stdin) != reset {
			t.Errorf("reset batch %+v", b)
		}
		if c, _ := LoadState(state); c != "c9" {
			t.Errorf("state = %q", c)
		}
		if want := "2026-11-25T15:00:00Z reset: cursor is older than the retained history; snapshot of 2 repos, 1 refs\n"; !strings.HasSuffix(out.String(), want) {
			t.Errorf("output %q", out.String())
		}
	})
}

func TestWatcherOutput(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprint("json=", asJSON), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var out bytes.Buffer
				w := New(Config{Out: &out, JSON: asJSON})
				f := refFrame(1, "acme/app", "refs/heads/main")
				err := runFor(w, &script{steps: []step{
					{frame: Frame{Event: "hello", ID: "c0", Data: []byte(`{"cursor":"c0"}`)}},
					{frame: f},
					{frame: Frame{Event: "ref", ID: "c2", Data: []byte(`not json`)}},
				}}, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				want := "2026-11-25T14:00:00Z acme/app refs/heads/main update 1111111..0000000\n"
				if asJSON {
					want = string(f.Data) + "\n"
				}
				if out.String() != want {
					t.Errorf("output %q, want %q", out.String(), want)
				}
			})
		})
	}
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name string
		done []int // indexes of added frames, in the order they finish
		want []string
	}{
		{"in order", []int{0, 1, 2}, []string{"a", "b", "c"}},
		{"out of order", []int{2, 0, 1}, []string{"", "a", "c"}},
		{"hole", []int{1, 2}, []string{"", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(3, "")
			var seqs []uint64
			for _, c := range []string{"a", "b", "c"} {
				s, err := tr.add(context.Background(), c)
				if err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, s)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			defer cancel()
			if _, err := tr.add(ctx, "d"); err == nil {
				t.Fatal("add past max did not block")
			}
			for i, d := range tt.done {
				tr.done(seqs[d])
				if got := tr.safeCursor(); got != tt.want[i] {
					t.Errorf("after done(%d): safe %q, want %q", d, got, tt.want[i])
				}
			}
		})
	}
}

func TestWatcherHelloHint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		w := New(Config{Logger: log})
		hint := "no refs known for demo/ap; known repos like it: demo/app"
		hello := Frame{Event: "hello", ID: "c0", Data: []byte(`{"cursor":"c0","hint":"` + hint + `"}`)}
		err := runFor(w, &script{steps: []step{{frame: hello}, {frame: hello}}}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "known repos like it: demo/app") {
			t.Errorf("logs %q: want the hint logged once at warn level", logs.String())
		}
	})
}
