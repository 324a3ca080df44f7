package fanout

import (
	"fmt"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// testHub is an engine that is not running: tests hand it bus messages as
// the bus reader would (dispatch).
func testHub(tb testing.TB, partitions int, mod func(*Options)) *Engine {
	tb.Helper()
	opts := Options{MaxQueue: DefaultMaxQueue, MaxConnections: 1 << 20, Heartbeat: time.Minute, Metrics: testMetrics()}
	if mod != nil {
		mod(&opts)
	}
	h := New(nil, opts)
	h.heads = make(bus.Heads, partitions)
	for i := range h.heads {
		h.heads[i] = bus.PartitionHead{Epoch: uint64(i + 1), First: 1}
	}
	h.pos = wire.Cursor{Epoch: wire.EpochFingerprint(h.heads), Seqs: make([]uint64, partitions)}
	h.started = true
	return h
}

// dispatch hands one event to the engine the way its bus reader does
// (follow): a message of one event that ends the batch, then the hand-off
// to writers.
func dispatch(h *Engine, ev *bus.Event) {
	h.handle(bus.Message{Partition: ev.Partition, Events: unsafe.Slice(ev, 1)}, true, time.Now())
	h.flushScheduled()
}

// handlerSub registers a live handler-path subscriber (no connection:
// scheduling rings its doorbell).
func handlerSub(tb testing.TB, h *Engine, latest bool, repos []string, refs ...string) *subscriber {
	tb.Helper()
	f, err := bus.ParseFilter(repos, refs)
	if err != nil {
		tb.Fatal(err)
	}
	st, _, err := h.Register(Spec{Filter: f, Latest: latest, Handler: true})
	if err != nil {
		tb.Fatal(err)
	}
	st.GoLive(nil)
	return st.s
}

// emptyQueue does to a handler-path subscriber what its writer would,
// without the writing: drops its queue and clears scheduled and the
// doorbell.
func emptyQueue(s *subscriber) {
	s.mu.Lock()
	clear(s.queue)
	s.queue = s.queue[:0]
	s.scheduled = false
	s.mu.Unlock()
	select {
	case <-s.wake:
	default:
	}
}

// TestCoalesceKeepsCursorOrder: when a mode=latest queue folds, the ids of
// the frames left must still rise. A client that reads a merged frame and
// disconnects resumes from its id: if that id is newer than frames queued
// after it, those updates are lost.
func TestCoalesceKeepsCursorOrder(t *testing.T) {
	t.Parallel()
	h := testHub(t, 1, func(o *Options) { o.MaxQueue = 3 })
	s := handlerSub(t, h, true, []string{"acme/app"})
	seq := uint64(0)
	pub := func(ref, old, new string) {
		seq++
		dispatch(h, &bus.Event{V: 1, Repo: "acme/app", Ref: ref, Old: old, New: new, Kind: upd(ref, old, new).Kind(), Seq: seq})
	}
	pub("refs/heads/x", z, oid(1))
	pub("refs/heads/y", z, oid(2))
	pub("refs/heads/x", oid(1), oid(3))
	pub("refs/heads/z", z, oid(4)) // the queue is full: it folds
	s.mu.Lock()
	q := append([]*frame(nil), s.queue...)
	closed := s.closed
	s.mu.Unlock()
	if closed {
		t.Fatal("mode=latest subscriber evicted")
	}
	state := map[string]string{}
	var prev uint64
	for i, f := range q {
		if f.ev == nil {
			continue
		}
		ev := f.event()
		if old, ok := state[ev.Ref]; ok && old != ev.Old {
			t.Errorf("frame %d: %s old %s, client holds %s", i, ev.Ref, ev.Old, old)
		}
		state[ev.Ref] = ev.New
		if f.pos[0] < prev {
			t.Errorf("frame %d (%s) has position %d after %d: ids go backwards", i, ev.Ref, f.pos[0], prev)
		}
		prev = f.pos[0]
		if ev.Ref == "refs/heads/x" && (ev.Old != z || ev.New != oid(3) || ev.Kind != bus.KindCreate) {
			t.Errorf("merged x: %+v, want create of %s", ev, oid(3))
		}
	}
	if len(state) != 3 || state["refs/heads/x"] != oid(3) {
		t.Fatalf("folded queue holds %v", state)
	}
}

// TestDispatchIndex: an event reaches exactly the subscribers whose filter
// matches, exact-repo subscribers through the index.
func TestDispatchIndex(t *testing.T) {
	t.Parallel()
	h := testHub(t, 4, nil)
	a := handlerSub(t, h, false, []string{"acme/app"})
	b := handlerSub(t, h, false, []string{"acme/lib", "acme/app"}, "refs/tags/*")
	g := handlerSub(t, h, false, []string{"acme/*"}, "^refs/heads/wip/*")
	o := handlerSub(t, h, false, []string{"other"})
	p := bus.PartitionOf("acme/app", 4)
	dispatch(h, &bus.Event{Repo: "acme/app", Ref: "refs/heads/main", Partition: p, Seq: 1})
	dispatch(h, &bus.Event{Repo: "acme/app", Ref: "refs/tags/v1", Partition: p, Seq: 2})
	dispatch(h, &bus.Event{Repo: "acme/app", Ref: "refs/heads/wip/x", Partition: p, Seq: 3})
	dispatch(h, &bus.Event{Repo: "acme/app", Ref: "refs/heads/wip/x", Partition: p, Seq: 3}) // seen: ignored
	for _, tc := range []struct {
		name string
		s    *subscriber
		want int
	}{{"exact", a, 3}, {"two repos, tags", b, 1}, {"glob without wip", g, 2}, {"other repo", o, 0}} {
		tc.s.mu.Lock()
		got := len(tc.s.queue)
		tc.s.mu.Unlock()
		if got != tc.want {
			t.Errorf("%s: %d frames queued, want %d", tc.name, got, tc.want)
		}
	}
	h.remove(b, "closed")
	if len(h.exact["acme/lib"]) != 0 || len(h.exact["acme/app"]) != 1 || h.Count() != 3 {
		t.Fatalf("after remove: index %v, %d subscribers", h.exact, h.Count())
	}
}

func benchEvent() *bus.Event {
	forced := false
	commits := 3
	return &bus.Event{V: 1, Repo: "acme/platform/api", Ref: "refs/heads/feature/login-form", Old: oid(0xabcdef), New: oid(0x123456),
		Kind: bus.KindUpdate, PushID: "p-1732540000-9f2c", Time: time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC), Pusher: "alice",
		Source: "post-receive", Forced: &forced, Commits: &commits, Enriched: bus.EnrichFull,
		Commit: &bus.Commit{Subject: "Add the login form with validation", Author: "Alice <alice@example.com>", Time: time.Date(2026, 11, 25, 13, 59, 0, 0, time.UTC)}}
}

func BenchmarkEncodeEventFrame(b *testing.B) {
	ev := benchEvent()
	c := wire.Cursor{Epoch: 0xdeadbeef, Seqs: make([]uint64, bus.DefaultPartitions)}
	for i := range c.Seqs {
		c.Seqs[i] = uint64(1000000 + i*7919)
	}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = wire.AppendEventFrame(buf[:0], "ref", c, ev)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkFilterMatch(b *testing.B) {
	f, err := bus.ParseFilter([]string{"acme/api", "acme/web", "acme/platform/*"},
		[]string{"refs/heads/*", "refs/tags/v*", "^refs/heads/wip/*", "^refs/heads/dependabot/*"})
	if err != nil {
		b.Fatal(err)
	}
	evs := []bus.Event{
		{Repo: "acme/platform/api", Ref: "refs/heads/feature/login-form"}, // glob repo, match
		{Repo: "acme/api", Ref: "refs/heads/wip/experiment"},              // excluded
		{Repo: "acme/web", Ref: "refs/tags/v1.2.3"},                       // match
		{Repo: "acme/web", Ref: "refs/pull/123/head"},                     // no include matches
		{Repo: "other/api", Ref: "refs/heads/main"},                       // repo does not match
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f.Match(&evs[i%len(evs)])
		i++
	}
}

// BenchmarkDispatch fans events out to subscribers spread over 1,000
// repos, each subscriber naming one repo. An event's cost should grow with
// the subscribers of its repo only, and allocate nothing per subscriber.
// Each iteration also empties the queues it filled, as a writer would.
func BenchmarkDispatch(b *testing.B) {
	const repos = 1000
	for _, bc := range []struct{ perRepo, globs int }{{1, 0}, {10, 0}, {100, 0}, {10, 100}} {
		perRepo := bc.perRepo
		b.Run(fmt.Sprintf("subs=%d/matching=%d/globs=%d", repos*perRepo+bc.globs, perRepo+bc.globs, bc.globs), func(b *testing.B) {
			h := testHub(b, bus.DefaultPartitions, nil)
			names := make([]string, repos)
			for r := range names {
				names[r] = fmt.Sprintf("acme/repo%d", r)
				for range perRepo {
					handlerSub(b, h, false, []string{names[r]}, "refs/heads/*", "^refs/heads/wip/*")
				}
			}
			// Glob subscribers are checked for every event.
			for range bc.globs {
				handlerSub(b, h, false, []string{"acme/*"}, "refs/heads/*")
			}

			evs := make([]bus.Event, repos)
			for r := range evs {
				evs[r] = *benchEvent()
				evs[r].Repo = names[r]
				evs[r].Partition = bus.PartitionOf(names[r], bus.DefaultPartitions)
			}
			seq := make([]uint64, bus.DefaultPartitions)
			drain := func(repo string) {
				for s := range h.globs {
					emptyQueue(s)
				}
				for s := range h.exact[repo] {
					emptyQueue(s)
				}
			}
			// Warm up: every subscriber's queue has grown once.
			for r := range evs {
				seq[evs[r].Partition]++
				evs[r].Seq = seq[evs[r].Partition]
				dispatch(h, &evs[r])
				drain(names[r])
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ev := &evs[i%repos]
				seq[ev.Partition]++
				ev.Seq = seq[ev.Partition]
				dispatch(h, ev)
				drain(ev.Repo)
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(perRepo+bc.globs), "ns/delivery")
			if n := h.Count(); n != repos*perRepo+bc.globs {
				b.Fatalf("%d subscribers left, want %d (evictions?)", n, repos*perRepo+bc.globs)
			}
		})
	}
}

// TestHeartbeatSpread drives the housekeeper's visit with a synthetic
// clock: every idle stream gets a heartbeat, spread over the ticks rather
// than all at once, and no stream stays silent much longer than Heartbeat.
func TestHeartbeatSpread(t *testing.T) {
	t.Parallel()
	const n, hb = 3000, 15 * time.Second
	h := testHub(t, 1, func(o *Options) { o.Heartbeat = hb })
	t0 := time.Unix(1_000_000, 0)
	subs, last := writtenSubs(t, h, n, func(int) time.Time { return t0 })
	var maxGap time.Duration
	maxPerTick := 0
	for now := t0.Add(HousekeeperTick); now.Before(t0.Add(4 * hb)); now = now.Add(HousekeeperTick) {
		h.visit(now)
		sent := 0
		for i, s := range subs {
			if takeQueued(s) { // as if written now
				sent++
				maxGap = max(maxGap, now.Sub(last[i]))
				last[i] = now
				s.lastWrite.Store(now.UnixNano())
			}
		}
		maxPerTick = max(maxPerTick, sent)
	}
	for i := range last {
		maxGap = max(maxGap, t0.Add(4*hb).Sub(last[i]))
	}
	t.Logf("%d streams, Heartbeat %v: longest silence %v, at most %d heartbeats per %v tick", n, hb, maxGap, maxPerTick, HousekeeperTick)
	if want := n * int(HousekeeperTick) / int(hb) * 3; maxPerTick > want {
		t.Errorf("%d heartbeats in one tick: not spread (want at most %d)", maxPerTick, want)
	}
	// A stream is sent a heartbeat at the last visit before its silence
	// would exceed Heartbeat.
	if maxGap > hb+HousekeeperTick {
		t.Errorf("a stream was silent for %v with Heartbeat %v", maxGap, hb)
	}
}

// writtenSubs registers n subscribers on acme/app whose last write was at
// at(i), for the heartbeat tests, and returns them with those times.
func writtenSubs(t *testing.T, h *Engine, n int, at func(i int) time.Time) ([]*subscriber, []time.Time) {
	t.Helper()
	subs := make([]*subscriber, n)
	last := make([]time.Time, n)
	for i := range subs {
		subs[i] = handlerSub(t, h, false, []string{"acme/app"})
		last[i] = at(i)
		subs[i].lastWrite.Store(last[i].UnixNano())
	}
	return subs, last
}

// takeQueued empties a subscriber's queue as a writer that wrote it would
// (the heartbeat tests drive visit by hand, with no writers), and reports
// whether it held anything.
func takeQueued(s *subscriber) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	got := len(s.queue) > 0
	s.queue = s.queue[:0]
	s.scheduled = false
	return got
}

// TestHeartbeatSkipsBusyStreams: a stream that carried something within
// the last half Heartbeat is sent no heartbeat (it needs none to keep a
// proxy's idle timer from firing), while an idle one beside it still gets
// one about every Heartbeat. Synthetic clock, as TestHeartbeatSpread.
func TestHeartbeatSkipsBusyStreams(t *testing.T) {
	t.Parallel()
	const n, hb = 1000, 15 * time.Second
	const every = hb / 3 // a busy stream's traffic
	h := testHub(t, 1, func(o *Options) { o.Heartbeat = hb })
	t0 := time.Unix(1_000_000, 0)
	// Connected at different times within the last round, as streams the
	// housekeeper has not visited yet.
	subs, last := writtenSubs(t, h, n, func(i int) time.Time { return t0.Add(-time.Duration(i) * hb / 2 / n) })
	busy := func(i int) bool { return i%2 == 0 }
	var busyBeats, idleBeats int
	var maxIdleGap time.Duration
	end := t0.Add(6 * hb)
	for now := t0.Add(HousekeeperTick); now.Before(end); now = now.Add(HousekeeperTick) {
		h.visit(now)
		for i, s := range subs {
			if takeQueued(s) {
				if busy(i) {
					busyBeats++
				} else {
					idleBeats++
					maxIdleGap = max(maxIdleGap, now.Sub(last[i]))
				}
				last[i] = now
				s.lastWrite.Store(now.UnixNano())
			}
			if busy(i) && now.Sub(last[i]) >= every { // an event written
				last[i] = now
				s.lastWrite.Store(now.UnixNano())
			}
		}
	}
	t.Logf("%d busy streams (a write every %v): %d heartbeats; %d idle: %d heartbeats, longest silence %v", n/2, every, busyBeats, n/2, idleBeats, maxIdleGap)
	if busyBeats != 0 {
		t.Errorf("busy streams were sent %d heartbeats, want none", busyBeats)
	}
	// Over 6 Heartbeats every idle stream gets at least 5.
	if idleBeats < n/2*5 {
		t.Errorf("idle streams were sent %d heartbeats, want at least %d", idleBeats, n/2*5)
	}
	if maxIdleGap > hb+HousekeeperTick {
		t.Errorf("an idle stream was silent for %v with Heartbeat %v", maxIdleGap, hb)
	}
}

// TestDispatchAllocations: queueing an event costs the same allocations
// whether 10 or 1,000 subscribers match it: nothing per subscriber.
func TestDispatchAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	perEvent := func(subs int) float64 {
		h := testHub(t, bus.DefaultPartitions, nil)
		var all []*subscriber
		for range subs {
			all = append(all, handlerSub(t, h, false, []string{"acme/platform/api"}, "refs/heads/*", "^refs/heads/wip/*"))
		}
		ev := benchEvent()
		ev.Partition = bus.PartitionOf(ev.Repo, bus.DefaultPartitions)
		dispatch := func() {
			ev.Seq++
			dispatch(h, ev)
			for _, s := range all {
				emptyQueue(s)
			}
		}
		dispatch() // queues and toSchedule grow once
		return testing.AllocsPerRun(50, dispatch)
	}
	few, many := perEvent(10), perEvent(1000)
	t.Logf("allocations per event: %v with 10 subscribers, %v with 1,000", few, many)
	if many != few {
		t.Errorf("allocations per event grow with subscribers: %v with 10, %v with 1,000", few, many)
	}
}

// TestFiltersInterned: subscribers asking for the same repos and refs share
// one filter, which goes when the last of them does; a different filter
// is not mixed up with it.
func TestFiltersInterned(t *testing.T) {
	t.Parallel()
	h := testHub(t, bus.DefaultPartitions, nil)
	a := handlerSub(t, h, false, []string{"acme/app"}, "refs/heads/*", "^refs/heads/wip/*")
	b := handlerSub(t, h, false, []string{"acme/app"}, "refs/heads/*", "^refs/heads/wip/*")
	c := handlerSub(t, h, false, []string{"acme/app"}, "refs/heads/*")
	if a.shared == nil || a.shared != b.shared || a.shared == c.shared {
		t.Fatalf("shared filters: a %p, b %p, c %p", a.shared, b.shared, c.shared)
	}
	if len(h.filters) != 2 {
		t.Fatalf("%d interned filters, want 2", len(h.filters))
	}
	// The shared match must not leak between filters: wip goes to c only.
	dispatch(h, &bus.Event{Repo: "acme/app", Ref: "refs/heads/wip/x", Partition: bus.PartitionOf("acme/app", bus.DefaultPartitions), Seq: 1})
	for _, tc := range []struct {
		name string
		s    *subscriber
		want int
	}{{"a", a, 0}, {"b", b, 0}, {"c", c, 1}} {
		tc.s.mu.Lock()
		got := len(tc.s.queue)
		tc.s.mu.Unlock()
		if got != tc.want {
			t.Errorf("%s: %d frames queued, want %d", tc.name, got, tc.want)
		}
	}
	h.remove(a, "closed")
	if len(h.filters) != 2 || b.shared.subs != 1 {
		t.Fatalf("after one of two left: %d filters, %d users", len(h.filters), b.shared.subs)
	}
	h.remove(b, "closed")
	h.remove(c, "closed")
	h.remove(c, "closed") // twice is harmless
	if len(h.filters) != 0 {
		t.Fatalf("%d interned filters left after every subscriber left", len(h.filters))
	}
}

// TestGlobStageSkipsEventsBeforeRegistration: the glob stage lags the bus
// reader, so a glob stream that registers while events wait for the stage
// must not get those (its handler replays them from the history up to the
// position Register returned) and must get every event after it, in
// order; a stream the repo index finds is not held up by the stage at all.
func TestGlobStageSkipsEventsBeforeRegistration(t *testing.T) {
	t.Parallel()
	h := testHub(t, 2, nil)
	// A glob stage that is not running: events wait in its queue, as
	// behind a slow stage, until the test runs its body.
	h.globCh = make(chan globWork, 16)
	h.runCtx = t.Context()
	early := handlerSub(t, h, false, []string{"acme/*"})
	exact := handlerSub(t, h, false, []string{"acme/app"})
	p := bus.PartitionOf("acme/app", 2)
	ev := func(seq uint64) *bus.Event {
		return &bus.Event{V: 1, Repo: "acme/app", Ref: "refs/heads/main", Kind: bus.KindUpdate, Partition: p, Seq: seq}
	}
	dispatch(h, ev(1))
	dispatch(h, ev(2))
	if got := seqsOf(exact); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("exact stream got %v before the glob stage ran, want [1 2]", got)
	}
	late := handlerSub(t, h, false, []string{"acme/**"})
	dispatch(h, ev(3))
	runGlobStage := func() {
		for len(h.globCh) > 0 {
			w := <-h.globCh
			subs, _ := h.globSnapshot(nil)
			h.handOffList(h.matchGlobs(subs, w, nil))
		}
	}
	runGlobStage()
	if got := seqsOf(early); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("glob stream registered first got %v, want [1 2 3]", got)
	}
	if got := seqsOf(late); !slices.Equal(got, []uint64{3}) {
		t.Errorf("glob stream registered after event 2 got %v, want [3] (1 and 2 are its replay's)", got)
	}
	dispatch(h, ev(4))
	runGlobStage()
	if got := seqsOf(late); !slices.Equal(got, []uint64{3, 4}) {
		t.Errorf("glob stream then got %v, want [3 4]", got)
	}
}

// seqsOf is the Seqs of the events queued to a handler-path subscriber.
func seqsOf(s *subscriber) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for _, f := range s.queue {
		if _, seq, ok := f.seq(); ok {
			out = append(out, seq)
		}
	}
	return out
}
