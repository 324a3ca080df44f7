package fanout

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/wire"
)

// TestLatestModeLargePush: a mode=latest client that is behind when one
// push of 3,000 distinct refs arrives is not evicted (its queue cannot
// fold distinct refs, and one push must never cost a client its stream),
// and then receives every ref's state.
func TestLatestModeLargePush(t *testing.T) {
	t.Parallel()
	n := runEngine(t, func(o *Options) {
		o.MaxQueue = 16
		o.WriteTimeout = time.Hour // about queues, never evicted for slowness (publishing can take 20 s under load)
	})
	s := n.stream(t, Spec{Latest: true}, "acme/app") // not read until the push is queued

	const refs = 3000 // ~7 MB of frames: more than the socket buffers hold
	n.publish(t, bigPush("acme/app", 0, refs, func(int) string { return z }, func(i int) string { return oid(i + 1) }))
	eventually(t, 10*time.Second, "the push to be queued", func() bool { return n.m.Deliveries.(*counter).value() == refs })
	if ev := n.evictions.value(); ev != 0 {
		t.Fatalf("mode=latest client evicted by one push (%v)", ev)
	}

	got := map[string]string{}
	_ = s.conn.SetReadDeadline(time.Now().Add(patience))
	for len(got) < refs {
		ev := s.next(t)
		if _, dup := got[ev.Ref]; dup {
			t.Fatalf("%s delivered twice", ev.Ref)
		}
		got[ev.Ref] = ev.New
	}
	if ev := n.evictions.value(); ev != 0 {
		t.Fatalf("mode=latest client evicted (%v)", ev)
	}
}

// TestFloorOnBareFrames: what a stream queues before it goes live are bare
// frames (no decoded event, frame.bare), and GoLive's floor still applies
// to them: events the client has are dropped, the others are written with
// the floor merged into their id, their event unchanged, those after the
// floor is passed as they are (a frame after that one dereferenced the
// floor it had cleared: a writer's panic), and a mode=latest stream, which
// queues frames with their event, gets the same bytes.
func TestFloorOnBareFrames(t *testing.T) {
	b, err := memory.New(memory.Options{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	n := runEngineOn(t, b, nil)
	// Two repos on different partitions.
	repoA, repoB := "acme/a", ""
	for i := 0; repoB == ""; i++ {
		if r := fmt.Sprintf("acme/b%d", i); bus.PartitionOf(r, 2) != bus.PartitionOf(repoA, 2) {
			repoB = r
		}
	}
	pa, pb := bus.PartitionOf(repoA, 2), bus.PartitionOf(repoB, 2)
	f, err := bus.ParseFilter([]string{"acme/*"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var streams []Stream
	for _, latest := range []bool{false, true} {
		st, _, err := n.Register(Spec{Filter: f, Latest: latest, Handler: true})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	// Three updates in each repo, of distinct refs (nothing to fold),
	// repo A's queued first.
	for _, repo := range []string{repoA, repoB} {
		for i := range 3 {
			n.publish(t, newPush(repo, upd(fmt.Sprintf("refs/heads/%s%d", repo[len("acme/"):len("acme/")+1], i), z, oid(i+1))))
		}
		n.dispatched(t)
	}
	// And one more of repo A's, queued after the floor is passed.
	n.publish(t, newPush(repoA, upd("refs/heads/a3", z, oid(4))))
	n.dispatched(t)
	pos, _ := n.Position()
	nodeCheck := pos.Check(pb)
	// The client has the first two of repo B's partition only.
	floor := &wire.Cursor{Seqs: make([]uint64, 2), Checks: make([]uint32, 2)}
	floor.Seqs[pb], floor.Checks[pb] = 2, 77
	var outs []string
	for i, st := range streams {
		if latest := i == 1; !latest {
			st.s.mu.Lock()
			for _, q := range st.s.queue {
				if q.ev != nil {
					t.Errorf("a frame queued to a stream not in mode=latest holds its event")
				}
			}
			st.s.mu.Unlock()
		}
		st.GoLive(floor)
		select {
		case <-st.Wake():
		case <-time.After(patience):
			t.Fatal("the stream was not woken after GoLive")
		}
		rec := httptest.NewRecorder()
		st.FlushHTTP(rec, http.NewResponseController(rec))
		outs = append(outs, rec.Body.String())
		st.Remove(ReasonClosed)
	}
	if outs[0] != outs[1] {
		t.Errorf("bare frames wrote\n%s\nframes with their event wrote\n%s", outs[0], outs[1])
	}
	var refs []string
	for frame := range strings.SplitSeq(strings.TrimSuffix(outs[0], "\n\n"), "\n\n") {
		var id string
		var ev bus.Event
		for line := range strings.SplitSeq(frame, "\n") {
			if v, ok := strings.CutPrefix(line, "id: "); ok {
				id = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				if err := json.Unmarshal([]byte(v), &ev); err != nil {
					t.Fatalf("data %q: %v", v, err)
				}
			}
		}
		c, err := wire.DecodeCursor(id)
		if err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		refs = append(refs, ev.Ref)
		// Repo A's events came before the floor's position on B's
		// partition: their ids carry the floor there (and its check);
		// repo B's last is past it.
		wantA, wantB, wantCheck := uint64(ev.Ref[len(ev.Ref)-1]-'0'+1), uint64(2), uint32(77)
		switch ev.Ref {
		case "refs/heads/b2", "refs/heads/a3":
			// Past the floor: the node's own id, with its own check.
			wantB, wantCheck = 3, nodeCheck
			if ev.Ref == "refs/heads/b2" {
				wantA = 3
			}
		}
		if c.Seqs[pa] != wantA || c.Seqs[pb] != wantB || c.Check(pb) != wantCheck {
			t.Errorf("%s: id %v, want %d on partition %d, %d (check %d) on %d", ev.Ref, c, wantA, pa, wantB, wantCheck, pb)
		}
	}
	slices.Sort(refs) // the engine follows the two partitions each in its order
	if want := []string{"refs/heads/a0", "refs/heads/a1", "refs/heads/a2", "refs/heads/a3", "refs/heads/b2"}; !slices.Equal(refs, want) {
		t.Errorf("wrote %q, want %q", refs, want)
	}
}

// TestEventBytesCountedOnce: an event held by a stream in mode=latest
// (its frame with the decoded event) and by one that is not (the bare
// frame) counts its bytes once and its decoded event once, plus a slot
// each; the node's count returns to 0 when both are gone.
func TestEventBytesCountedOnce(t *testing.T) {
	n := runEngine(t, nil)
	var subs []*subscriber
	for _, latest := range []bool{false, true} {
		subs = append(subs, registerApp(t, n, Spec{Latest: latest, Handler: true}))
	}
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1))))
	n.dispatched(t)
	var frames []*frame
	for _, s := range subs {
		s.mu.Lock()
		frames = append(frames, s.queue...)
		s.mu.Unlock()
	}
	if len(frames) != 2 || frames[0].ev != nil || frames[1].ev == nil || frames[1].bare != frames[0] {
		t.Fatalf("queued %+v: want the bare frame, then its twin with the event", frames)
	}
	want := int64(cap(frames[0].data)) + eventBytes(frames[1].ev) + 2*slotBytes
	if got := n.QueuedBytes(); got != want {
		t.Errorf("counted %d, want %d (the bytes once, the event once, two slots)", got, want)
	}
	for _, s := range subs {
		n.remove(s, ReasonClosed)
	}
	if got := n.QueuedBytes(); got != 0 {
		t.Errorf("counted %d once both streams are gone, want 0", got)
	}
}

// TestNothingQueuedAfterLastFrame: once a stream's last frame is queued
// (a retry hint after a rewind or a drain, a token's expiry), events that
// follow are not queued behind it: a writer wrote a batch holding the
// last frame and what came after it whole, so a client closed for a
// rewind got the new history's events without the reset its reconnect
// brings. It resumes from its cursor instead.
func TestNothingQueuedAfterLastFrame(t *testing.T) {
	n := runEngine(t, nil)
	s := registerApp(t, n, Spec{Handler: true}) // not live: its frames stay queued
	n.publish(t, newPush("acme/app", upd("refs/heads/a", z, oid(1))))
	n.dispatched(t)
	n.closeWithRetry(s)
	n.publish(t, newPush("acme/app", upd("refs/heads/b", z, oid(2))))
	n.dispatched(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	var kinds []string
	for _, q := range s.queue {
		switch _, _, isEvent := q.seq(); {
		case q.last:
			kinds = append(kinds, "last")
		case isEvent:
			kinds = append(kinds, "event")
		default:
			kinds = append(kinds, "other")
		}
	}
	if want := []string{"event", "last"}; !slices.Equal(kinds, want) {
		t.Errorf("queued %q, want %q", kinds, want)
	}
}
