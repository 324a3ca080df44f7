package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bolt"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/wire"
)

// The rewind tests: a store comes back from an older copy of itself with
// the same epoch, and new pushes reuse the Seqs it lost. A client holding
// a cursor into the lost events must get a reset (and end with the
// snapshot), never a resume that skips the new events on those Seqs; the
// same for a delta and an If-None-Match.

const rewindRepo = "acme/app"

// rewindPush publishes a push of one ref to rewindRepo, retrying while the
// store is unavailable (it may be restarting).
func rewindPush(t *testing.T, b bus.Bus, id, ref string, n int) {
	t.Helper()
	p := &bus.Push{ID: id, Repo: rewindRepo, Time: time.Now().UTC(), Source: "api",
		Updates: []bus.RefUpdate{upd(ref, oid(n), oid(n+1))}}
	deadline := time.Now().Add(patience)
	for {
		_, err := b.Publish(context.Background(), p)
		if err == nil {
			return
		}
		if !errors.Is(err, bus.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("publish %s: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seen is what a client learnt before the store was rewound: the cursor of
// the last event it received and the ETag of a snapshot.
type seen struct {
	cursor, etag string
}

// followAndSnapshot opens a stream on n from the start, publishes count
// pushes (ids prefix0...), receives them, and takes a snapshot's ETag.
func followAndSnapshot(t *testing.T, n *testNode, b bus.Bus, prefix string, count int) seen {
	t.Helper()
	s := n.subscribe(t, query("repo", rewindRepo), nil)
	s.opening()
	for i := range count {
		rewindPush(t, b, fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("refs/heads/%s%d", prefix, i), 100+i)
	}
	_, frames := s.events(count, patience)
	s.close()
	status, hdr, body := n.get(t, "/v1/refs?"+query("repo", rewindRepo), nil)
	if status != http.StatusOK {
		t.Fatalf("snapshot: %d %s", status, body)
	}
	return seen{cursor: frames[len(frames)-1].ID, etag: hdr.Get("ETag")}
}

// waitFollowed waits until n's engine is at the bus's head of rewindRepo's
// partition, so the resume below meets the rewound history and not the
// node's memory of the old one.
func waitFollowed(t *testing.T, n *testNode, b bus.Bus) {
	t.Helper()
	p := bus.PartitionOf(rewindRepo, b.Partitions())
	eventually(t, patience, "the node follows the rewound history", func() bool {
		h, err := b.Heads(context.Background())
		pos, ok := n.srv.engine.Position()
		return err == nil && ok && pos.Seqs[p] == h[p].Last && pos.Check(p) == wire.CheckOf(h[p].Chain)
	})
}

// checkRewound asserts every way back in with what the client saw gets the
// current state, marked as a reset.
func checkRewound(t *testing.T, n *testNode, b bus.Bus, old seen) {
	t.Helper()
	st, err := b.Refs(context.Background(), rewindRepo)
	if err != nil {
		t.Fatal(err)
	}
	c, err := wire.DecodeCursor(old.cursor)
	if err != nil {
		t.Fatal(err)
	}
	p := bus.PartitionOf(rewindRepo, b.Partitions())
	if h, _ := b.Heads(context.Background()); c.Seqs[p] > h[p].Last || c.Epoch != wire.EpochFingerprint(h) {
		t.Fatalf("the scenario needs the old cursor (seq %d) inside the rewound history (last %d) of the same epochs", c.Seqs[p], h[p].Last)
	}

	// An SSE client resuming with Last-Event-ID.
	s := n.subscribe(t, query("repo", rewindRepo), map[string]string{wire.HeaderLastEventID: old.cursor})
	between, hello := s.opening()
	if len(between) != 1 || between[0].Event != wire.EventReset {
		t.Fatalf("resume after a rewind: got %+v before the hello, want exactly one reset", between)
	}
	var reset wire.Reset
	if err := json.Unmarshal([]byte(between[0].Data), &reset); err != nil {
		t.Fatal(err)
	}
	if len(reset.Repos) != 1 || !maps.Equal(reset.Repos[0].Refs, st.Refs) {
		t.Errorf("reset snapshot %+v, want the current refs %v", reset.Repos, st.Refs)
	}
	if reset.Reason != wire.ReasonRewound {
		t.Logf("reset reason: %q", reset.Reason)
	}
	s.close()
	// Resuming from the reset's cursor is a plain resume.
	s = n.subscribe(t, query("repo", rewindRepo), map[string]string{wire.HeaderLastEventID: hello.ID})
	if between, _ := s.opening(); len(between) != 0 {
		t.Errorf("resume from the reset's cursor: got %+v, want nothing to replay", between)
	}
	s.close()

	// A delta from the old cursor.
	status, _, body := n.get(t, "/v1/refs?"+query("repo", rewindRepo, "since", old.cursor), nil)
	var snap wire.Snapshot
	if status != http.StatusOK || json.Unmarshal(body, &snap) != nil {
		t.Fatalf("delta from the old cursor: %d %s", status, body)
	}
	if !snap.Reset || len(snap.Repos) != 1 || !maps.Equal(snap.Repos[0].Refs, st.Refs) {
		t.Errorf("delta from the old cursor = %s, want a reset snapshot with refs %v", body, st.Refs)
	}

	// A conditional request with the old ETag.
	status, _, body = n.get(t, "/v1/refs?"+query("repo", rewindRepo), map[string]string{"If-None-Match": old.etag})
	if status != http.StatusOK || json.Unmarshal(body, &snap) != nil || len(snap.Repos) != 1 || !maps.Equal(snap.Repos[0].Refs, st.Refs) {
		t.Errorf("If-None-Match with the old ETag: %d %s, want 200 with refs %v", status, body, st.Refs)
	}
}

// TestRewindRedisRestore: Redis restarts from an RDB snapshot taken before
// the last pushes a client received; new pushes reuse those Seqs under the
// same epoch.
func TestRewindRedisRestore(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	b, err := redis.Open(context.Background(), srv.URL(), redis.Options{Partitions: 4, Block: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	n := startNode(t, b, 0, nil)
	admin := srv.Client()

	for i := range 5 {
		rewindPush(t, b, fmt.Sprintf("base%d", i), "refs/heads/main", i+1)
	}
	if err := admin.Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	snapshot := filepath.Join(t.TempDir(), "old.rdb")
	copyFile(t, filepath.Join(srv.Dir(), "dump.rdb"), snapshot)
	// A live client that stays connected through the rewind.
	live := n.subscribe(t, query("repo", rewindRepo), nil)
	live.opening()
	old := followAndSnapshot(t, n, b, "lost", 3) // acknowledged and delivered, then lost
	live.events(3, patience)

	srv.Kill()
	copyFile(t, snapshot, filepath.Join(srv.Dir(), "dump.rdb"))
	srv.Restart()
	for i := range 6 { // more than were lost: the old cursor's Seq exists again
		rewindPush(t, b, fmt.Sprintf("new%d", i), fmt.Sprintf("refs/heads/new%d", i), 200+i)
	}
	waitFollowed(t, n, b)

	// The live client was ended by the node when it noticed; it never got
	// an event of the new history on top of the lost one.
	for {
		f, err := live.next(patience)
		if err != nil {
			break // closed: it resumes with its cursor, checked below
		}
		if f.Event == "ref" {
			t.Fatalf("the live client got %+v on top of the lost events", f)
		}
	}
	checkRewound(t, n, b, old)
}

// TestRewindBoltRestore: the embedded bus's data directory (its file and
// its log) is replaced by an older copy between two runs of the node.
func TestRewindBoltRestore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := bolt.Options{Partitions: 4}
	run := func() (*bolt.Bus, *testNode) {
		b, err := bolt.Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		return b, startNode(t, b, 0, nil)
	}
	b, n := run()
	for i := range 5 {
		rewindPush(t, b, fmt.Sprintf("base%d", i), "refs/heads/main", i+1)
	}
	n.stop()
	_ = b.Close()
	backup := t.TempDir()
	for _, name := range []string{bolt.FileName, bolt.WALFileName} {
		copyFile(t, filepath.Join(dir, name), filepath.Join(backup, name))
	}

	b, n = run()
	old := followAndSnapshot(t, n, b, "lost", 3)
	n.stop()
	_ = b.Close()
	for _, name := range []string{bolt.FileName, bolt.WALFileName} {
		copyFile(t, filepath.Join(backup, name), filepath.Join(dir, name))
	}

	b, n = run()
	t.Cleanup(func() { _ = b.Close() })
	for i := range 6 {
		rewindPush(t, b, fmt.Sprintf("new%d", i), fmt.Sprintf("refs/heads/new%d", i), 200+i)
	}
	waitFollowed(t, n, b)
	checkRewound(t, n, b, old)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
