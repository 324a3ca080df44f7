package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
)

// crash ends b as a killed process would: nothing flushed, files closed
// (releasing bbolt's lock so the directory can be opened again).
func crash(t *testing.T, b *Bus) {
	t.Helper()
	b.mu.Lock()
	b.closed = true
	close(b.done)
	b.mu.Unlock()
	b.subs.Wait()
	b.wmu.Lock()
	defer b.wmu.Unlock()
	_ = b.w.f.Close()
	if err := b.db.Close(); err != nil {
		t.Fatal(err)
	}
}

// view is what a client can read of a bus: heads, every partition's
// history, every repo's state and the repo list.
type view struct {
	heads  bus.Heads
	events map[int][]bus.Event
	refs   map[string]bus.RefState
	repos  []string
}

func read(t *testing.T, b *Bus, repos []string) view {
	t.Helper()
	v := view{heads: heads(t, b), events: map[int][]bus.Event{}, refs: map[string]bus.RefState{}}
	for pi, h := range v.heads {
		evs, err := b.History(t.Context(), pi, h.Epoch, h.First-1, 1<<20)
		if err != nil {
			t.Fatalf("History(%d): %v", pi, err)
		}
		for i := range evs {
			evs[i].Time = evs[i].Time.UTC()
		}
		v.events[pi] = evs
	}
	for _, repo := range repos {
		st, err := b.Refs(t.Context(), repo)
		if err != nil {
			t.Fatalf("Refs(%s): %v", repo, err)
		}
		complete, err := b.GitComplete(t.Context(), repo)
		if err != nil {
			t.Fatal(err)
		}
		if complete != st.Complete {
			t.Fatalf("%s: GitComplete %v, Refs says %v", repo, complete, st.Complete)
		}
		v.refs[repo] = st
	}
	var err error
	if v.repos, err = b.Repos(t.Context()); err != nil {
		t.Fatal(err)
	}
	return v
}

func sameView(t *testing.T, what string, got, want view) {
	t.Helper()
	if !slices.Equal(got.heads, want.heads) {
		t.Fatalf("%s: heads %v, want %v", what, got.heads, want.heads)
	}
	for pi := range want.heads {
		if !equalEvents(got.events[pi], want.events[pi]) {
			t.Fatalf("%s: partition %d history\n got %+v\nwant %+v", what, pi, got.events[pi], want.events[pi])
		}
	}
	for repo, w := range want.refs {
		g := got.refs[repo]
		if !maps.Equal(g.Refs, w.Refs) || !maps.Equal(g.Peeled, w.Peeled) || g.Head != w.Head || g.Complete != w.Complete ||
			g.Seq != w.Seq || g.Epoch != w.Epoch || g.Chain != w.Chain {
			t.Fatalf("%s: state of %s\n got %+v\nwant %+v", what, repo, g, w)
		}
	}
	if !slices.Equal(got.repos, want.repos) {
		t.Fatalf("%s: repos %v, want %v", what, got.repos, want.repos)
	}
}

// randomPushes are pushes of every kind over a few repos: creations,
// updates and deletions (a repo's last ref too), seeds and whole pushes
// with HEAD and peeled tags, and a repeated push id.
func randomPushes(seed uint64, n int) []*bus.Push {
	r := rand.New(rand.NewPCG(seed, 1))
	repos := []string{"acme/app", "acme/lib", "acme/web", "acme/ops", "acme/doc"}
	var out []*bus.Push
	for i := range n {
		repo := repos[r.IntN(len(repos))]
		id := fmt.Sprintf("p%d", i)
		if i > 0 && r.IntN(20) == 0 {
			id = fmt.Sprintf("p%d", r.IntN(i)) // published before: same events back
		}
		var p *bus.Push
		switch k := r.IntN(10); {
		case k == 0: // a seed: the whole state, replaced
			p = &bus.Push{ID: id, Repo: repo, Time: time.Unix(int64(i), 0).UTC(), Seed: true, Head: "refs/heads/main"}
			for j := range 1 + r.IntN(4) {
				u := bus.RefUpdate{Ref: fmt.Sprintf("refs/heads/b%d", j), New: bustest.ID(1 + r.IntN(50))}
				p.Updates = append(p.Updates, u)
			}
			p.Updates = append(p.Updates, bus.RefUpdate{Ref: "refs/heads/main", New: bustest.ID(7)},
				bus.RefUpdate{Ref: "refs/tags/v1", New: bustest.ID(8), Peeled: bustest.ID(9)})
		case k == 1: // a new repository's first push
			p = &bus.Push{ID: id, Repo: repo, Time: time.Unix(int64(i), 0).UTC(), Whole: true, Head: "refs/heads/main", Updates: []bus.RefUpdate{
				{Ref: "refs/heads/main", Old: bus.ZeroSHA1, New: bustest.ID(1 + r.IntN(50))},
			}}
		default:
			var pairs []string
			pool := []string{"refs/heads/b0", "refs/heads/b1", "refs/heads/b2", "refs/heads/b3", "refs/heads/main", "refs/tags/v1"}
			for _, j := range r.Perm(len(pool))[:1+r.IntN(4)] {
				ref := pool[j]
				nw := ""
				if r.IntN(5) > 1 {
					nw = bustest.ID(1 + r.IntN(50))
				}
				pairs = append(pairs, ref, nw)
			}
			p = bustest.Push(id, repo, pairs...)
			if r.IntN(2) == 0 {
				p.Head = "refs/heads/main"
			}
		}
		out = append(out, p)
	}
	return out
}

var testRepos = []string{"acme/app", "acme/lib", "acme/web", "acme/ops", "acme/doc", "acme/none"}

// TestTailReadsMatchFile: after every publish, what a client reads of a
// bus whose pushes wait in the log's tail (history, ref state, HEAD and
// peels, repos) equals what it reads of a bus that flushes every push to
// bbolt, and of the first one after a crash and a replay of its log.
func TestTailReadsMatchFile(t *testing.T) {
	dir := t.TempDir()
	tailed := open(t, dir, Options{Partitions: 2, History: 40, flushPushes: 1 << 20})
	// The same epochs, so heads compare: a copy of the fresh file.
	flushedDir := t.TempDir()
	copyFile(t, filepath.Join(dir, FileName), filepath.Join(flushedDir, FileName))
	flushed := open(t, flushedDir, Options{Partitions: 2, History: 40, flushPushes: 1})
	for i, p := range randomPushes(1, 150) {
		a := publish(t, tailed, p)
		b := publish(t, flushed, p)
		if !equalEvents(a, b) {
			t.Fatalf("push %d (%s): events %+v, flushed bus %+v", i, p.ID, a, b)
		}
		sameView(t, fmt.Sprintf("after push %d (%s)", i, p.ID), read(t, tailed, testRepos), read(t, flushed, testRepos))
	}
	if len(tailed.tail) == 0 || len(flushed.tail) != 0 {
		t.Fatalf("tails: %d and %d pushes, want some and none", len(tailed.tail), len(flushed.tail))
	}
	want := read(t, flushed, testRepos)
	crash(t, tailed)
	re := open(t, dir, Options{Partitions: 2, History: 40})
	sameView(t, "replayed", read(t, re, testRepos), want)
	if n := re.Replayed(); n != len(tailed.tail) {
		t.Fatalf("Replayed() = %d, want the %d pushes of the tail", n, len(tailed.tail))
	}
	if len(re.tail) != 0 {
		t.Fatalf("replayed bus has a tail of %d", len(re.tail))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// records returns the offsets of the records of generation gen at the
// start of the log in dir.
func records(t *testing.T, dir string, gen uint64) []int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, WALFileName))
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	for off := 0; off+walHeader <= len(data); {
		if binary.BigEndian.Uint32(data[off:]) != walMagic || binary.BigEndian.Uint64(data[off+4:]) != gen {
			break
		}
		offs = append(offs, off)
		off += walHeader + int(binary.BigEndian.Uint32(data[off+12:]))
	}
	return offs
}

// TestLogTornRecord: a record that does not read back whole (torn by a
// crash, or never synced) and everything after it are not replayed; the
// pushes before it are, and the lost push published again takes the next
// position.
func TestLogTornRecord(t *testing.T) {
	for name, damage := range map[string]func(data []byte, off int){
		"flipped byte": func(data []byte, off int) { data[off+walHeader+3] ^= 0x40 },
		"zeroed":       func(data []byte, off int) { clear(data[off+walHeader/2:]) },
		"bad length":   func(data []byte, off int) { binary.BigEndian.PutUint32(data[off+12:], 1<<30) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			b := open(t, dir, Options{Partitions: 1})
			for i := 1; i <= 3; i++ {
				publish(t, b, bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i)))
			}
			gen := b.w.gen
			crash(t, b)
			offs := records(t, dir, gen)
			if len(offs) != 3 {
				t.Fatalf("log holds %d records of generation %d, want 3", len(offs), gen)
			}
			path := filepath.Join(dir, WALFileName)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			damage(data, offs[2])
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}

			b = open(t, dir, Options{Partitions: 1})
			h := heads(t, b)[0]
			if h.Last != 2 {
				t.Fatalf("head after replay %+v, want the first two pushes", h)
			}
			if st, err := b.Refs(t.Context(), "acme/app"); err != nil || st.Refs["refs/heads/main"] != bustest.ID(2) {
				t.Fatalf("state %+v (%v), want main at the second push", st, err)
			}
			if evs := publish(t, b, bustest.Push("p2", "acme/app", "refs/heads/main", bustest.ID(2))); evs[0].Seq != 2 {
				t.Fatalf("p2 again at %d, want 2 (remembered)", evs[0].Seq)
			}
			if evs := publish(t, b, bustest.Push("p3", "acme/app", "refs/heads/main", bustest.ID(3))); evs[0].Seq != 3 {
				t.Fatalf("p3 again at %d, want 3", evs[0].Seq)
			}
		})
	}
}

// TestLogOldRecordsIgnored: records of a generation the file already holds
// (left in the log after a flush), and a log beside a fresh file (the old
// one moved aside), are not replayed.
func TestLogOldRecordsIgnored(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 1})
	publish(t, b, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1)))
	publish(t, b, bustest.Push("p2", "acme/app", "refs/heads/dev", bustest.ID(2)))
	gen := b.w.gen
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(records(t, dir, gen)); n != 2 {
		t.Fatalf("log holds %d records of generation %d after Close, want the 2 flushed", n, gen)
	}
	b = open(t, dir, Options{Partitions: 1})
	if h := heads(t, b)[0]; h.Last != 2 {
		t.Fatalf("head %+v after reopening, want Last 2", h)
	}
	publish(t, b, bustest.Push("p3", "acme/app", "refs/heads/main", bustest.ID(3)))
	crash(t, b)

	// The file moved aside, as Open's error tells an operator to do with a
	// damaged one: the log's pushes belong to it, not to a new file.
	if err := os.Rename(filepath.Join(dir, FileName), filepath.Join(dir, "aside.db")); err != nil {
		t.Fatal(err)
	}
	b = open(t, dir, Options{Partitions: 1})
	if h := heads(t, b)[0]; h.Last != 0 {
		t.Fatalf("fresh file's head %+v, want empty", h)
	}
	if repos, err := b.Repos(t.Context()); err != nil || len(repos) != 0 {
		t.Fatalf("fresh file's repos %v (%v), want none", repos, err)
	}
}

// TestLogFullAndLargePushes: with a small log, pushes that fill it flush
// it first, and a push larger than the whole log is committed to bbolt
// directly with the tail before it; all of them survive a crash, in order.
func TestLogFullAndLargePushes(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Partitions: 2, flushPushes: 1 << 20, logSize: 16 << 10}
	b := open(t, dir, opts)
	var pushes []*bus.Push
	for i := range 60 {
		p := bustest.Push(fmt.Sprintf("p%d", i), fmt.Sprintf("acme/r%d", i%7), "refs/heads/main", bustest.ID(i+1))
		if i%20 == 10 { // ~40 KB of record: more than the log
			var pairs []string
			for j := range 300 {
				pairs = append(pairs, fmt.Sprintf("refs/heads/topic/%03d", j), bustest.ID(j+1))
			}
			p = bustest.Push(p.ID, p.Repo, pairs...)
		}
		pushes = append(pushes, p)
	}
	gens := map[uint64]bool{}
	acked := map[string][]bus.Event{}
	for _, p := range pushes {
		acked[p.ID] = publish(t, b, p)
		gens[b.w.gen] = true
	}
	if len(gens) < 4 {
		t.Fatalf("the log went through %d generations, want it filled and flushed several times", len(gens))
	}
	repos := []string{"acme/r0", "acme/r1", "acme/r2", "acme/r3", "acme/r4", "acme/r5", "acme/r6"}
	want := read(t, b, repos)
	crash(t, b)
	b = open(t, dir, opts)
	sameView(t, "after the crash", read(t, b, repos), want)
	for _, p := range pushes {
		if evs := publish(t, b, p); !equalEvents(evs, acked[p.ID]) {
			t.Fatalf("%s again: %+v, acknowledged %+v", p.ID, evs, acked[p.ID])
		}
	}
}

func FuzzReadRecords(f *testing.F) {
	e := &entry{p: bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1)), pi: 3, first: 7, chain: 42}
	ev := e.p.Events()[0]
	v, err := encodeEvent(&ev, time.Unix(1, 2))
	if err != nil {
		f.Fatal(err)
	}
	e.vals = [][]byte{v}
	rec, err := encodeRecord([]*entry{e, e})
	if err != nil {
		f.Fatal(err)
	}
	sealRecord(rec, 5)
	f.Add(rec, false)
	f.Add(append(slices.Clone(rec), rec...), false)
	f.Add(rec[:len(rec)-1], false)
	f.Add([]byte{}, false)
	f.Add(rec[walHeader:], true)
	// seal: data is a payload, given a header that checks out, so the
	// fuzzer explores the payload's decoder past the checksum.
	f.Fuzz(func(t *testing.T, data []byte, seal bool) {
		if seal {
			data = sealRecord(append(make([]byte, walHeader), data...), 5)
		}
		entries, err := readRecords(bytes.NewReader(data), int64(len(data)), 5)
		if err != nil {
			return
		}
		for _, e := range entries {
			if len(e.vals) == 0 || e.p == nil {
				t.Fatalf("entry %+v", e)
			}
		}
		// What reads back encodes to a record that reads back the same.
		if len(entries) == 0 {
			return
		}
		again, err := encodeRecord(entries)
		if err != nil {
			t.Fatal(err)
		}
		round, err := readRecords(bytes.NewReader(sealRecord(again, 5)), int64(len(again)), 5)
		if err != nil || len(round) != len(entries) {
			t.Fatalf("round trip: %d entries (%v), want %d", len(round), err, len(entries))
		}
		for i := range round {
			if round[i].pi != entries[i].pi || round[i].first != entries[i].first || round[i].chain != entries[i].chain ||
				len(round[i].vals) != len(entries[i].vals) || round[i].p.ID != entries[i].p.ID {
				t.Fatalf("round trip entry %d: %+v, want %+v", i, round[i], entries[i])
			}
		}
	})
}

// TestCloseFlushesLog: after Close the file alone holds every push (an
// older refcast, which knows no log, reads the directory as it was), and
// a new log is made.
func TestCloseFlushesLog(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 2})
	for i := 1; i <= 5; i++ {
		publish(t, b, bustest.Push(fmt.Sprintf("p%d", i), fmt.Sprintf("acme/r%d", i%2), "refs/heads/main", bustest.ID(i)))
	}
	repos := []string{"acme/r0", "acme/r1"}
	want := read(t, b, repos)
	if len(b.tail) != 5 {
		t.Fatalf("tail of %d pushes before Close, want 5", len(b.tail))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, WALFileName)); err != nil {
		t.Fatal(err)
	}
	b = open(t, dir, Options{Partitions: 2})
	sameView(t, "without the log", read(t, b, repos), want)
}

// TestLogUnreadable: a record that reads back whole but cannot be decoded
// (written so, not torn) fails Open with a message naming the log, not
// the file.
func TestLogUnreadable(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 1})
	gen := b.w.gen
	crash(t, b)
	rec := binary.BigEndian.AppendUint32(make([]byte, walHeader), 1) // one entry, then nothing
	f, err := os.OpenFile(filepath.Join(dir, WALFileName), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(sealRecord(rec, gen), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{Partitions: 1})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "move the log aside") || !strings.Contains(err.Error(), WALFileName) {
		t.Fatalf("Open: %v, want ErrCorrupt naming %s", err, WALFileName)
	}
	if err := os.Rename(filepath.Join(dir, WALFileName), filepath.Join(dir, "aside.wal")); err != nil {
		t.Fatal(err)
	}
	open(t, dir, Options{Partitions: 1})
}

// TestWindowRepublishedID: memory forgets a push id at once and the file
// at the next flush; an id published again in between is remembered at its
// new place after that flush, and the directory opens again.
func TestWindowRepublishedID(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Partitions: 1, PushIDs: 4, flushPushes: 6}
	b := open(t, dir, opts)
	var seqs []uint64
	for _, id := range []string{"p1", "p2", "p3", "p4", "p5", "p1", "p1"} {
		seqs = append(seqs, publish(t, b, bustest.Push(id, "acme/app", "refs/heads/main", bustest.ID(1)))[0].Seq)
	}
	// p1 was forgotten by the fifth publish: the sixth appends, the
	// seventh (after the flush the sixth made) is remembered.
	if want := []uint64{1, 2, 3, 4, 5, 6, 6}; !slices.Equal(seqs, want) {
		t.Fatalf("positions %v, want %v", seqs, want)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = open(t, dir, opts)
	if evs := publish(t, b, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1))); evs[0].Seq != 6 {
		t.Fatalf("p1 after reopening at %d, want 6", evs[0].Seq)
	}
}

// TestWindowDuplicatesInFile: between its trims the file can hold an id at
// an old place and a new one; the window read back at Open (after a crash,
// so from the file and the log) is the newest PushIDs of what memory held,
// at the places memory had.
func TestWindowDuplicatesInFile(t *testing.T) {
	type pos struct {
		pi    uint32
		first uint64
	}
	window := func(b *Bus) map[string]pos {
		m := map[string]pos{}
		for id, p := range b.pushes {
			m[id] = pos{p.pi, p.first}
		}
		return m
	}
	for _, every := range []int{2, 5, 17, 1 << 20} {
		dir := t.TempDir()
		opts := Options{Partitions: 2, PushIDs: 32, flushPushes: every}
		b := open(t, dir, opts)
		for i := 1; i <= 150; i++ {
			id := fmt.Sprintf("p%d", i)
			if i%7 == 0 {
				id = fmt.Sprintf("p%d", i-33) // about to be forgotten, or just
			}
			publish(t, b, bustest.Push(id, fmt.Sprintf("acme/r%d", i%3), "refs/heads/main", bustest.ID(i)))
		}
		want := window(b)
		crash(t, b)
		b = open(t, dir, opts)
		// Open trims to the bound exactly; memory held up to its slack more.
		got := window(b)
		for id, p := range got {
			if want[id] != p {
				t.Fatalf("flush every %d: %s at %v after reopening, at %v before", every, id, p, want[id])
			}
		}
		if len(got) != opts.PushIDs || len(want) < len(got) {
			t.Fatalf("flush every %d: %d ids after reopening, %d before, want %d after", every, len(got), len(want), opts.PushIDs)
		}
		_ = b.Close()
	}
}

// TestRefsFlushBetweenReads: Refs takes the tail before it reads the file;
// a flush in between must not apply the tail twice. Twice would be wrong:
// a repo whose last ref was deleted loses its HEAD, and a second pass over
// a state that never empties would keep it.
func TestRefsFlushBetweenReads(t *testing.T) {
	b := open(t, t.TempDir(), Options{Partitions: 1, flushPushes: 1 << 20})
	a := bustest.Push("a", "acme/app", "refs/heads/r1", bustest.ID(1))
	a.Head = "refs/heads/main"
	publish(t, b, a)
	publish(t, b, bustest.Push("b", "acme/app", "refs/heads/r1", "")) // no refs: no state
	publish(t, b, bustest.Push("c", "acme/app", "refs/heads/r2", bustest.ID(2)))
	want, err := b.Refs(t.Context(), "acme/app")
	if err != nil {
		t.Fatal(err)
	}
	if want.Head != "" {
		t.Fatalf("HEAD %q, want none: the state emptied after a", want.Head)
	}
	s, err := b.state()
	if err != nil {
		t.Fatal(err)
	}
	b.wmu.Lock()
	err = b.flush(nil, nil)
	b.wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	refs, fields := map[string]string{}, map[string]string{}
	var inFile uint64
	if err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		inFile, _, err = readState(tx, 0, s.heads[0], "acme/app", refs, fields)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	overlay(s.tail, inFile, "acme/app", refs, fields)
	var got bus.RefState
	got.SetGitFields(fields)
	if got.Head != want.Head || !maps.Equal(refs, want.Refs) {
		t.Fatalf("with a flush between the reads: refs %v HEAD %q, want %v HEAD %q", refs, got.Head, want.Refs, want.Head)
	}
}

// TestRefsRacingFlushes: the same through Refs, against a publisher whose
// every third publish flushes.
func TestRefsRacingFlushes(t *testing.T) {
	b := open(t, t.TempDir(), Options{Partitions: 1, flushPushes: 3, noSync: true})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 500 {
			a := bustest.Push(fmt.Sprintf("a%d", i), "acme/app", "refs/heads/r1", bustest.ID(1))
			a.Head = "refs/heads/main"
			for _, p := range []*bus.Push{a,
				bustest.Push(fmt.Sprintf("b%d", i), "acme/app", "refs/heads/r1", ""),
				bustest.Push(fmt.Sprintf("c%d", i), "acme/app", "refs/heads/r2", bustest.ID(2)),
				bustest.Push(fmt.Sprintf("d%d", i), "acme/app", "refs/heads/r2", ""),
				bustest.Push(fmt.Sprintf("x%d", i), "acme/other", "refs/heads/x", bustest.ID(i+1)),
			} {
				if _, err := b.Publish(t.Context(), p); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-done:
			t.Logf("%d reads", n)
			return
		default:
		}
		st, err := b.Refs(t.Context(), "acme/app")
		if err != nil {
			t.Fatal(err)
		}
		if st.Refs["refs/heads/r2"] != "" && st.Head != "" {
			t.Fatalf("state %+v: r2 exists only after c, which follows the state emptying and sets no HEAD", st)
		}
	}
}

// TestLogAppendFails: while the log cannot be written (here its file is
// closed), every publish is committed to bbolt directly: acknowledged, at
// consistent positions, and all of them survive a crash.
func TestLogAppendFails(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Partitions: 1, flushPushes: 1 << 20}
	b := open(t, dir, opts)
	p := func(i int) *bus.Push {
		return bustest.Push(fmt.Sprintf("p%d", i), "acme/app", "refs/heads/main", bustest.ID(i))
	}
	publish(t, b, p(1))
	publish(t, b, p(2))
	b.wmu.Lock()
	_ = b.w.f.Close() // every write to it fails from now on
	b.wmu.Unlock()
	for i := 3; i <= 5; i++ {
		if evs := publish(t, b, p(i)); evs[0].Seq != uint64(i) {
			t.Fatalf("p%d at %d, want %d", i, evs[0].Seq, i)
		}
		if len(b.tail) != 0 {
			t.Fatalf("after p%d the tail holds %d pushes, want 0 (committed directly)", i, len(b.tail))
		}
	}
	want := read(t, b, []string{"acme/app"})
	crash(t, b)
	b = open(t, dir, opts)
	sameView(t, "reopened", read(t, b, []string{"acme/app"}), want)
	if evs := publish(t, b, p(4)); evs[0].Seq != 4 {
		t.Fatalf("p4 again at %d, want 4 (remembered)", evs[0].Seq)
	}
}

// TestLogSyncFails: a publish whose record was written but not synced
// (fdatasync failed: the record may be in the file or not) is committed to
// bbolt directly and acknowledged; after a crash it is there once, at its
// position, and the record is not replayed on top of it. Once the log
// syncs again, publishes go through it again; both changes are logged.
func TestLogSyncFails(t *testing.T) {
	for _, before := range []int{0, 2} {
		t.Run(fmt.Sprintf("tail%d", before), func(t *testing.T) {
			dir := t.TempDir()
			var logged bytes.Buffer
			opts := Options{Partitions: 1, Logger: slog.New(slog.NewTextHandler(&logged, nil))}
			b := open(t, dir, opts)
			push := func(i int, ref string) *bus.Push {
				return bustest.Push(fmt.Sprintf("p%d", i), "acme/app", ref, bustest.ID(i))
			}
			for i := range before {
				publish(t, b, push(i+1, "refs/heads/main"))
			}
			b.wmu.Lock()
			b.w.failSync = errors.New("injected fdatasync failure")
			b.wmu.Unlock()
			for i := before + 1; i <= before+2; i++ {
				if evs := publish(t, b, push(i, fmt.Sprintf("refs/heads/b%d", i))); evs[0].Seq != uint64(i) {
					t.Fatalf("p%d published at %d with a failing sync, want %d", i, evs[0].Seq, i)
				}
				if len(b.tail) != 0 {
					t.Fatalf("tail holds %d pushes while the log fails, want 0 (committed directly)", len(b.tail))
				}
			}
			b.wmu.Lock()
			b.w.failSync = nil
			b.wmu.Unlock()
			last := before + 3
			publish(t, b, push(last, "refs/heads/main"))
			if len(b.tail) != 1 {
				t.Fatalf("tail holds %d pushes once the log syncs again, want 1 (logged)", len(b.tail))
			}
			out := logged.String()
			if strings.Count(out, "the embedded bus's log failed") != 1 || !strings.Contains(out, "injected fdatasync failure") ||
				strings.Count(out, "the embedded bus's log works again") != 1 {
				t.Fatalf("log lines %q: want one warning naming the error, then one recovery", out)
			}
			want := read(t, b, []string{"acme/app"})
			crash(t, b)
			b = open(t, dir, Options{Partitions: 1})
			if h := heads(t, b)[0]; h.Last != uint64(last) {
				t.Fatalf("head %+v after the crash, want every acknowledged push (%d), each once", h, last)
			}
			sameView(t, "reopened", read(t, b, []string{"acme/app"}), want)
		})
	}
}

// TestFlushFails: a flush that fails before reaching the file leaves the
// pushes in the tail and the log, and publishing goes on; one that fails
// after (the commit may not be durable) stops publishing until a restart,
// reads go on, and nothing acknowledged is lost either way.
func TestFlushFails(t *testing.T) {
	for _, lands := range []bool{false, true} {
		t.Run(fmt.Sprintf("lands=%v", lands), func(t *testing.T) {
			dir := t.TempDir()
			injected := errors.New("injected flush failure")
			b := open(t, dir, Options{Partitions: 2, flushPushes: 3, flushErr: injected, flushLands: lands})
			repos := []string{"acme/r0", "acme/r1"}
			var acked []*bus.Push
			ackedAt := map[string]uint64{}
			var failed error
			for i := range 10 {
				p := bustest.Push(fmt.Sprintf("p%d", i), fmt.Sprintf("acme/r%d", i%2), "refs/heads/main", bustest.ID(i+1))
				evs, err := b.Publish(t.Context(), p)
				if err != nil {
					failed = err
					continue
				}
				acked = append(acked, p)
				ackedAt[p.ID] = evs[0].Seq
			}
			if lands {
				// The third publish's flush landed and failed: from then on
				// every publish fails, saying what to do.
				if len(acked) != 3 || !errors.Is(failed, bus.ErrUnavailable) || !strings.Contains(failed.Error(), "restart the node") {
					t.Fatalf("%d acknowledged, last error %v; want 3 and ErrUnavailable asking for a restart", len(acked), failed)
				}
			} else if len(acked) != 10 || len(b.tail) != 10 {
				t.Fatalf("%d acknowledged, tail %d, last error %v; want all 10 in the tail", len(acked), len(b.tail), failed)
			}
			if err := b.Ping(t.Context()); (err != nil) != lands {
				t.Fatalf("Ping: %v; want an error only once publishing stopped", err)
			}
			want := read(t, b, repos) // reads go on
			if err := b.Close(); err == nil {
				t.Fatal("Close: no error, want the failed flush (or the stop) reported")
			}
			b = open(t, dir, Options{Partitions: 2})
			sameView(t, "reopened", read(t, b, repos), want)
			for _, p := range acked {
				if evs := publish(t, b, p); evs[0].Seq != ackedAt[p.ID] {
					t.Fatalf("%s again at %d, acknowledged at %d", p.ID, evs[0].Seq, ackedAt[p.ID])
				}
			}
		})
	}
}

// TestOpenFileWithoutLog: a data directory of a refcast before the log (no
// bus.wal, no meta/walgen) opens, gets a log, and replays it after a crash.
func TestOpenFileWithoutLog(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 1})
	publish(t, b, bustest.Push("old", "acme/app", "refs/heads/main", bustest.ID(1)))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bktMeta).Delete(keyWALGen) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, WALFileName)); err != nil {
		t.Fatal(err)
	}

	b = open(t, dir, Options{Partitions: 1})
	if b.w.gen != 1 {
		t.Fatalf("log generation %d for a file without one, want 1", b.w.gen)
	}
	publish(t, b, bustest.Push("new", "acme/app", "refs/heads/dev", bustest.ID(2)))
	want := read(t, b, []string{"acme/app"})
	crash(t, b)
	b = open(t, dir, Options{Partitions: 1})
	sameView(t, "replayed", read(t, b, []string{"acme/app"}), want)
	if st := want.refs["acme/app"]; len(st.Refs) != 2 {
		t.Fatalf("state %v, want both refs", st.Refs)
	}
}

// TestLogFailedPublishNotBackAfterClose: a publish whose log append and
// then direct commit both failed (rolled back) is reported failed; after
// a clean Close it is not in the file, though its record may be in the
// log.
func TestLogFailedPublishNotBackAfterClose(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 1})
	injected := errors.New("injected failure")
	b.wmu.Lock()
	b.w.failSync, b.opts.flushErr = injected, injected
	b.wmu.Unlock()
	if _, err := b.Publish(t.Context(), bustest.Push("failed", "acme/app", "refs/heads/x", bustest.ID(1))); !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("publish with a failing log and file: %v, want ErrUnavailable", err)
	}
	b.wmu.Lock()
	b.w.failSync, b.opts.flushErr = nil, nil
	b.wmu.Unlock()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b = open(t, dir, Options{Partitions: 1})
	if h := heads(t, b)[0]; h.Last != 0 || b.Replayed() != 0 {
		t.Fatalf("after a clean Close: head %+v, replayed %d; want the failed publish absent", h, b.Replayed())
	}
}

// TestLogOfLaterGeneration: a file restored without its log (an older
// bus.db beside a newer bus.wal) replays nothing, and Open says so.
func TestLogOfLaterGeneration(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir, Options{Partitions: 1})
	publish(t, b, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1)))
	if err := b.Close(); err != nil { // generation G flushed
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), FileName)
	copyFile(t, filepath.Join(dir, FileName), backup)
	b = open(t, dir, Options{Partitions: 1})
	publish(t, b, bustest.Push("p2", "acme/app", "refs/heads/main", bustest.ID(2)))
	if err := b.Close(); err != nil { // G+1 flushed
		t.Fatal(err)
	}
	b = open(t, dir, Options{Partitions: 1})
	if g, _ := b.UnmatchedLog(); g != 0 || b.Replayed() != 0 {
		t.Fatalf("a clean reopen: UnmatchedLog %d, Replayed %d, want 0 and 0", g, b.Replayed())
	}
	publish(t, b, bustest.Push("p3", "acme/app", "refs/heads/main", bustest.ID(3)))
	crash(t, b) // G+2 in the log only

	copyFile(t, backup, filepath.Join(dir, FileName)) // expects G+1
	b = open(t, dir, Options{Partitions: 1})
	logGen, next := b.UnmatchedLog()
	if logGen != next+1 || b.Replayed() != 0 {
		t.Fatalf("UnmatchedLog %d, %d and Replayed %d; want the log one generation past the file's next, nothing replayed", logGen, next, b.Replayed())
	}
	if h := heads(t, b)[0]; h.Last != 1 {
		t.Fatalf("head %+v, want the backup's", h)
	}
}
