package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// redisTier starts a real redis-server and n nodes on it, and a bare repo
// whose hook publishes straight to Redis.
func redisTier(t *testing.T, n int, opts redistest.Options) (*redistest.Server, []*testnode.Node, string, string) {
	t.Helper()
	testnode.Require(t, "git", "redis-server")
	bin := testnode.Build(t)
	rs := redistest.Start(t, opts)
	var nodes []*testnode.Node
	for range n {
		nodes = append(nodes, testnode.Start(t, bin, "", "--redis", rs.URL(), "--drain", "100ms", "--heartbeat", "500ms"))
	}
	bare, work := hookedRepo(t, bin, "--redis", rs.URL(), "--repo", "acme/app")
	return rs, nodes, bare, work
}

// pushCommit commits and pushes main, returning the new id.
func pushCommit(t *testing.T, work, msg string) string {
	t.Helper()
	testnode.Git(t, work, nil, "commit", "-q", "--allow-empty", "-m", msg)
	testnode.Git(t, work, nil, "push", "-q", "origin", "HEAD:main")
	return testnode.Git(t, work, nil, "rev-parse", "HEAD")
}

// TestRedisTwoNodesAndResumeAcrossNodes: a push through the real hook
// (publishing straight to Redis) reaches clients of both nodes; a client
// that leaves node A and resumes on node B with Last-Event-ID gets exactly
// what it missed, in order.
func TestRedisTwoNodesAndResumeAcrossNodes(t *testing.T) {
	t.Parallel()
	_, nodes, _, work := redisTier(t, 2, redistest.Options{AOF: true})
	const q = "/v1/events?repo=acme/app&ref=refs/heads/*"
	a := testnode.Subscribe(t, nodes[0].URL+q, nil)
	b := testnode.Subscribe(t, nodes[1].URL+q, nil)
	a.Next(t, 5*time.Second, "hello")
	b.Next(t, 5*time.Second, "hello")

	first := pushCommit(t, work, "first")
	fa := a.Next(t, 10*time.Second, "ref")
	fb := b.Next(t, 10*time.Second, "ref")
	for _, f := range []testnode.Frame{fa, fb} {
		if ev := decodeEvent(t, f); ev.New != first || ev.Kind != bus.KindCreate {
			t.Fatalf("event %+v, want create of %s", ev, first)
		}
	}
	a.Close()

	var missed []string
	for i := range 3 {
		missed = append(missed, pushCommit(t, work, "missed "+string(rune('a'+i))))
	}
	b.Next(t, 10*time.Second, "ref") // B stays live meanwhile

	resumed := testnode.Subscribe(t, nodes[1].URL+q, http.Header{"Last-Event-ID": {fa.ID}})
	for i, want := range missed {
		ev := decodeEvent(t, resumed.Next(t, 10*time.Second, "ref", "reset"))
		if ev.New != want {
			t.Fatalf("resumed event %d new = %s, want %s", i, ev.New, want)
		}
	}
	resumed.Next(t, 5*time.Second, "hello")
	resumed.None(t, 300*time.Millisecond, "ref", "reset")

	// Live events keep flowing after the replay, without duplicates.
	next := pushCommit(t, work, "after resume")
	if ev := decodeEvent(t, resumed.Next(t, 10*time.Second, "ref")); ev.New != next {
		t.Fatalf("live event after resume = %s, want %s", ev.New, next)
	}
	resumed.None(t, 300*time.Millisecond, "ref")
}

// TestRedisRestartWithAndWithoutPersistence: with AOF, a Redis restart
// between pushes loses nothing and duplicates nothing; without
// persistence, clients that come back are told to resync (reset), never
// left with a silent gap.
func TestRedisRestartWithAndWithoutPersistence(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		aof  bool
	}{{"aof", true}, {"no-persistence", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rs, nodes, _, work := redisTier(t, 1, redistest.Options{AOF: tc.aof})
			node := nodes[0]
			const q = "/v1/events?repo=acme/app"
			s := testnode.Subscribe(t, node.URL+q, nil)
			s.Next(t, 5*time.Second, "hello")
			first := pushCommit(t, work, "before restart")
			f := s.Next(t, 10*time.Second, "ref")
			if ev := decodeEvent(t, f); ev.New != first {
				t.Fatalf("got %s, want %s", ev.New, first)
			}
			rs.Restart()
			second := pushCommit(t, work, "after restart")
			if !tc.aof {
				// The history is gone: the node drops its streams with a
				// retry hint; a client resuming gets a reset with the state.
				deadline := time.Now().Add(20 * time.Second)
				for {
					r := testnode.Subscribe(t, node.URL+q, http.Header{"Last-Event-ID": {f.ID}})
					fr := r.Next(t, 10*time.Second, "reset", "ref", "hello")
					if fr.Event == "reset" {
						if !strings.Contains(fr.Data, second) {
							t.Fatalf("reset snapshot lacks %s: %s", second, fr.Data)
						}
						return
					}
					r.Close()
					if time.Now().After(deadline) {
						t.Fatalf("no reset after Redis lost its data; last frame %+v", fr)
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
			ev := decodeEvent(t, s.Next(t, 20*time.Second, "ref"))
			if ev.New != second {
				t.Fatalf("after restart got %s, want %s", ev.New, second)
			}
			s.None(t, 500*time.Millisecond, "ref")
		})
	}
}
