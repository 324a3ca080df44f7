package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/wire"
)

// The failover rewind tests: the store's primary acknowledged pushes that
// clients received, its replica never got them, and the replica is
// promoted; new pushes then reuse the lost Seqs under the same epoch
// (the epoch keys were replicated long before). Unlike a restore, nothing
// restarts: the nodes keep following through Sentinel or the Cluster's
// redirections, so the rewind is seen live.

// freshCounts are the numbers of pushes after a failover that lost
// lostCount: as many (the old cursor's Seq is the new head, checked
// against the head's chain) and more (checked against the chain of the
// entry after it).
var freshCounts = []int{lostCount, 2 * lostCount}

const lostCount = 3

// TestRewindSentinelFailover: the primary dies after acknowledging pushes
// its replica missed (min-replicas off, the default), and Sentinel
// promotes that replica.
func TestRewindSentinelFailover(t *testing.T) {
	t.Parallel()
	for _, fresh := range freshCounts {
		t.Run(fmt.Sprintf("%d new pushes", fresh), func(t *testing.T) { sentinelFailover(t, fresh) })
	}
}

func sentinelFailover(t *testing.T, fresh int) {
	primary := redistest.Start(t, redistest.Options{})
	replica := redistest.StartReplica(t, primary)
	sentinel := redistest.StartSentinel(t, primary, []*redistest.Server{replica}, redistest.SentinelOptions{
		// Only the forced failover below may promote, and Sentinel skips
		// a replica whose link has been down longer than 10 ×
		// down-after; at the harness's 1 s, a slow machine could take
		// that long between detaching the replica and the failover.
		Args: []string{"sentinel down-after-milliseconds " + redistest.DefaultMasterName + " 600000"},
	})
	b, err := redis.Open(context.Background(), sentinel.URL(primary), redis.Options{Partitions: 4, Block: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	rewindFailover(t, b, primary, replica, fresh, func() {
		primary.Kill() // no split brain: nothing can write to it any more
		ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
		defer cancel()
		promoted, err := sentinel.Failover(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if promoted != replica.Addr() {
			t.Fatalf("sentinel promoted %s, want the replica %s", promoted, replica.Addr())
		}
	})
}

// TestRewindClusterFailover: the replica of the master holding the
// repo's partition misses its last pushes and takes the slots over
// (CLUSTER FAILOVER TAKEOVER, which checks nothing); the old master stays
// up, becomes its replica and drops what only it had.
func TestRewindClusterFailover(t *testing.T) {
	t.Parallel()
	for _, fresh := range freshCounts {
		t.Run(fmt.Sprintf("%d new pushes", fresh), func(t *testing.T) { clusterFailover(t, fresh) })
	}
}

func clusterFailover(t *testing.T, fresh int) {
	c := redistest.StartClusterWithReplicas(t, 3)
	const partitions = 4
	b, err := redis.Open(context.Background(), c.URL(), redis.Options{Partitions: partitions, Block: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	key := fmt.Sprintf("%s:{p%d}:stream", redis.DefaultPrefix, bus.PartitionOf(rewindRepo, partitions))
	i, err := c.Owner(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}

	rewindFailover(t, b, c.Servers[i], c.Replicas[i], fresh, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
		defer cancel()
		if err := c.Takeover(ctx, i); err != nil {
			t.Fatal(err)
		}
	})
}

// rewindFailover runs the scenario on b, whose partition of rewindRepo
// lives on primary: pushes the replica gets, pushes only primary gets
// (acknowledged, and received by a live client, a resuming one, a delta
// user and an ETag user), promote (which must make replica the primary),
// then fresh >= lostCount pushes that reuse the lost Seqs. Every client must end with the current
// refs: by a reset where it saw a lost push, by a plain resume where it
// did not.
func rewindFailover(t *testing.T, b bus.Bus, primary, replica *redistest.Server, fresh int, promote func()) {
	t.Helper()
	n := startNode(t, b, 0, nil)
	live := newRewindClient(t, n) // follows throughout, from the empty repo

	for i := range 5 {
		rewindPush(t, b, fmt.Sprintf("base%d", i), "refs/heads/main", i+1)
	}
	live.sync(refsNow(t, b))
	early := snapshotNow(t, n) // taken before the rewind point: must resume plainly

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	acked, err := primary.Client().Do(ctx, "WAIT", 1, patience.Milliseconds()).Int()
	if err != nil || acked < 1 {
		t.Fatalf("WAIT for the replica: %d, %v", acked, err)
	}
	replica.Detach()

	old := followAndSnapshot(t, n, b, "lost", lostCount) // acknowledged and delivered, then lost
	live.sync(refsNow(t, b))
	if p, r := replOffset(t, primary), replOffset(t, replica); p <= r {
		t.Fatalf("the replica is not behind: primary at offset %d, replica at %d", p, r)
	}

	promote()
	for i := range fresh { // the old cursor's Seq exists again
		rewindPush(t, b, fmt.Sprintf("new%d", i), fmt.Sprintf("refs/heads/new%d", i), 200+i)
	}
	waitFollowed(t, n, b)

	want := refsNow(t, b)
	for ref := range want {
		if strings.HasPrefix(ref, "refs/heads/lost") {
			t.Fatalf("the promoted replica has %s: the scenario needs the lost pushes gone", ref)
		}
	}
	live.sync(want)
	if live.resets == 0 {
		t.Errorf("the live client saw the lost pushes and got no reset (pushes %v)", live.pushes)
	}
	checkRewound(t, n, b, old)
	checkNotRewound(t, n, early, want, fresh)
}

func refsNow(t *testing.T, b bus.Bus) map[string]string {
	t.Helper()
	st, err := b.Refs(context.Background(), rewindRepo)
	if err != nil {
		t.Fatal(err)
	}
	return st.Refs
}

func replOffset(t *testing.T, s *redistest.Server) int64 {
	t.Helper()
	info, err := s.Replication(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	off, err := strconv.ParseInt(info["master_repl_offset"], 10, 64)
	if err != nil {
		t.Fatalf("master_repl_offset of %s: %v (%v)", s.Addr(), err, info)
	}
	return off
}

// snapshotSeen is a snapshot a client holds: its refs, cursor and ETag.
type snapshotSeen struct {
	seen
	refs map[string]string
}

func snapshotNow(t *testing.T, n *testNode) snapshotSeen {
	t.Helper()
	status, hdr, body := n.get(t, "/v1/refs?"+query("repo", rewindRepo), nil)
	var snap wire.Snapshot
	if status != http.StatusOK || json.Unmarshal(body, &snap) != nil || len(snap.Repos) != 1 {
		t.Fatalf("snapshot: %d %s", status, body)
	}
	return snapshotSeen{seen: seen{cursor: snap.Cursor, etag: hdr.Get("ETag")}, refs: snap.Repos[0].Refs}
}

// checkNotRewound asserts a client whose position is older than the
// rewind point (it saw no lost push) resumes plainly, as docs/operations.md
// promises: the new pushes replayed once, a delta, a fresh snapshot; no
// reset.
func checkNotRewound(t *testing.T, n *testNode, early snapshotSeen, want map[string]string, fresh int) {
	t.Helper()
	s := n.subscribe(t, query("repo", rewindRepo), map[string]string{wire.HeaderLastEventID: early.cursor})
	between, _ := s.opening()
	s.close()
	refs := maps.Clone(early.refs)
	var got []string
	for _, f := range between {
		if f.Event != wire.EventRef {
			t.Fatalf("resume from before the rewind point: got %+v, want only the new pushes' events", f)
		}
		ev := decodeEvent(t, f)
		got = append(got, ev.PushID)
		refs[ev.Ref] = ev.New
	}
	var wantIDs []string
	for i := range fresh {
		wantIDs = append(wantIDs, fmt.Sprintf("new%d", i))
	}
	if !slices.Equal(got, wantIDs) || !maps.Equal(refs, want) {
		t.Errorf("resume from before the rewind point replayed %v (refs %v), want %v (refs %v)", got, refs, wantIDs, want)
	}

	status, _, body := n.get(t, "/v1/refs?"+query("repo", rewindRepo, "since", early.cursor), nil)
	var delta wire.Delta
	if status != http.StatusOK || json.Unmarshal(body, &delta) != nil || delta.Reset {
		t.Fatalf("delta from before the rewind point: %d %s, want a delta", status, body)
	}
	refs = maps.Clone(early.refs)
	for _, c := range delta.Changes {
		if c.Kind == bus.KindDelete {
			delete(refs, c.Ref)
		} else {
			refs[c.Ref] = c.New
		}
	}
	if !maps.Equal(refs, want) {
		t.Errorf("delta from before the rewind point %s gives %v, want %v", body, refs, want)
	}

	status, _, body = n.get(t, "/v1/refs?"+query("repo", rewindRepo), map[string]string{"If-None-Match": early.etag})
	var snap wire.Snapshot
	if status != http.StatusOK || json.Unmarshal(body, &snap) != nil || snap.Reset || len(snap.Repos) != 1 || !maps.Equal(snap.Repos[0].Refs, want) {
		t.Errorf("If-None-Match from before the rewind point: %d %s, want 200 with refs %v, not a reset", status, body, want)
	}
}

// rewindClient follows rewindRepo the way a real client does: it applies
// ref events to its refs, replaces them with a reset's snapshot, and
// resumes with Last-Event-ID whenever the node ends the stream. It fails
// the test on what no client may see: a push twice since the last reset,
// or a new push applied on top of a lost one (a gap the client cannot
// notice).
type rewindClient struct {
	t      *testing.T
	n      *testNode
	s      *sseStream
	cursor string            // id of the last frame that had one
	refs   map[string]string // the client's state of rewindRepo
	pushes map[string]int    // push ids applied since the last reset
	resets int
}

func newRewindClient(t *testing.T, n *testNode) *rewindClient {
	t.Helper()
	c := &rewindClient{t: t, n: n, refs: map[string]string{}, pushes: map[string]int{}}
	c.connect()
	return c
}

// connect opens the stream, from c.cursor when it has one, waiting while
// the node answers 503 (its bus is failing over).
func (c *rewindClient) connect() {
	c.t.Helper()
	var hdr map[string]string
	if c.cursor != "" {
		hdr = map[string]string{wire.HeaderLastEventID: c.cursor}
	}
	eventually(c.t, patience, "the node takes the stream", func() bool {
		s := c.n.dialSSE(c.t, query("repo", rewindRepo), hdr)
		switch s.resp.StatusCode {
		case http.StatusOK:
			c.s = s
			return true
		case http.StatusServiceUnavailable:
			s.close()
			time.Sleep(50 * time.Millisecond)
			return false
		}
		c.t.Fatalf("stream from %q: status %d", c.cursor, s.resp.StatusCode)
		return false
	})
}

// sync reads frames until the client's refs are want, resuming when the
// node ends the stream.
func (c *rewindClient) sync(want map[string]string) {
	c.t.Helper()
	deadline := time.Now().Add(patience)
	for !maps.Equal(c.refs, want) {
		f, err := c.s.next(time.Until(deadline))
		var ne net.Error
		switch {
		case err == nil:
			c.apply(f)
		case errors.As(err, &ne) && ne.Timeout():
			c.t.Fatalf("the live client's refs %v never became %v (pushes since the last reset %v, %d resets)", c.refs, want, c.pushes, c.resets)
		default: // the node ended the stream: resume
			c.s.close()
			c.connect()
		}
	}
}

func (c *rewindClient) apply(f sseFrame) {
	c.t.Helper()
	if f.hasID {
		c.cursor = f.ID
	}
	switch f.Event {
	case wire.EventRef:
		ev := decodeEvent(c.t, f)
		if c.pushes[ev.PushID]++; c.pushes[ev.PushID] > 1 {
			c.t.Fatalf("the live client got push %s twice without a reset", ev.PushID)
		}
		if strings.HasPrefix(ev.PushID, "new") {
			for ref := range c.refs {
				if strings.HasPrefix(ref, "refs/heads/lost") {
					c.t.Fatalf("the live client got %s on top of the lost push of %s, without a reset", ev.PushID, ref)
				}
			}
		}
		if ev.Kind == bus.KindDelete {
			delete(c.refs, ev.Ref)
		} else {
			c.refs[ev.Ref] = ev.New
		}
	case wire.EventReset:
		var r wire.Reset
		if err := json.Unmarshal([]byte(f.Data), &r); err != nil {
			c.t.Fatal(err)
		}
		c.refs = map[string]string{}
		for _, rr := range r.Repos {
			if rr.Repo == rewindRepo {
				c.refs = maps.Clone(rr.Refs)
			}
		}
		c.pushes = map[string]int{}
		c.resets++
	case wire.EventHello, "": // the opening, heartbeats, retry hints
	default:
		c.t.Fatalf("the live client got an unexpected frame %+v", f)
	}
}
