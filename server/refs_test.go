package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/wire"
)

type snapshotBody struct {
	Cursor string          `json:"cursor"`
	Repos  []wire.RepoRefs `json:"repos"`
	Reset  bool            `json:"reset"`
}

type deltaBody struct {
	Cursor  string        `json:"cursor"`
	Since   string        `json:"since"`
	Reset   bool          `json:"reset"`
	Changes []wire.Change `json:"changes"`
	Repos   []wire.RepoRefs
}

func etag(h http.Header) string { return strings.Trim(h.Get("ETag"), `"`) }

func TestRefsSnapshotETag(t *testing.T) {
	t.Parallel()
	// One partition, so publishes to other repos move the very partition
	// this repo lives in.
	n := startNode(t, newBus(t, memory.Options{Partitions: 1}), 50*time.Millisecond, nil)
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1)), upd("refs/tags/v1", z, oid(2))))
	path := "/v1/refs?" + query("repo", "acme/app", "ref", "refs/heads/*")

	st, h, body := n.get(t, path, nil)
	if st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	var snap snapshotBody
	if err := json.Unmarshal(body, &snap); err != nil {
		t.Fatal(err)
	}
	if etag(h) != snap.Cursor || snap.Cursor == "" {
		t.Fatalf("ETag %q, cursor %q: want equal", h.Get("ETag"), snap.Cursor)
	}
	if !strings.Contains(h.Get("Cache-Control"), "max-age=1") {
		t.Errorf("Cache-Control %q", h.Get("Cache-Control"))
	}
	if len(snap.Repos) != 1 || !mapsEqual(snap.Repos[0].Refs, map[string]string{"refs/heads/main": oid(1)}) {
		t.Fatalf("snapshot %+v", snap.Repos)
	}

	notModified := func(tag string) {
		t.Helper()
		for _, v := range []string{`"` + tag + `"`, `W/"` + tag + `"`} {
			st, h, body := n.get(t, path, map[string]string{"If-None-Match": v})
			if st != http.StatusNotModified || len(body) != 0 {
				t.Fatalf("If-None-Match %s: %d %q, want 304 without body", v, st, body)
			}
			if etag(h) != tag {
				t.Fatalf("304 ETag %q, want %q", h.Get("ETag"), tag)
			}
		}
	}
	notModified(snap.Cursor)

	// Another repo, and a ref of this repo outside the filter: still 304.
	n.publish(t, newPush("acme/other", upd("refs/heads/main", z, oid(3))))
	n.publish(t, newPush("acme/app", upd("refs/tags/v2", z, oid(4))))
	n.waitDispatched(t)
	notModified(snap.Cursor)

	// This repo's filtered refs change: 200 and a new ETag.
	n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(1), oid(5))))
	n.waitDispatched(t)
	st, h, body = n.get(t, path, map[string]string{"If-None-Match": `"` + snap.Cursor + `"`})
	var snap2 snapshotBody
	if err := json.Unmarshal(body, &snap2); st != 200 || err != nil {
		t.Fatalf("%d %s", st, body)
	}
	if etag(h) == snap.Cursor || etag(h) != snap2.Cursor || snap2.Repos[0].Refs["refs/heads/main"] != oid(5) {
		t.Fatalf("after a change: ETag %q (old %q), body %+v", etag(h), snap.Cursor, snap2)
	}
	notModified(snap2.Cursor)

	// An ETag that is not a cursor simply does not match.
	if st, _, _ := n.get(t, path, map[string]string{"If-None-Match": `"xyz"`}); st != 200 {
		t.Fatalf("foreign ETag: %d", st)
	}
}

func TestRefsDelta(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{Partitions: 2, History: 8}), 50*time.Millisecond, nil)
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1)), upd("refs/heads/old", z, oid(2))))
	path := "/v1/refs?" + query("repo", "acme/app")
	_, _, body := n.get(t, path, nil)
	var snap snapshotBody
	if err := json.Unmarshal(body, &snap); err != nil {
		t.Fatal(err)
	}

	// Nothing since: an empty delta with the same cursor.
	st, h, body := n.get(t, path+"&"+query("since", snap.Cursor), nil)
	var d deltaBody
	if err := json.Unmarshal(body, &d); st != 200 || err != nil {
		t.Fatalf("%d %s", st, body)
	}
	if d.Reset || len(d.Changes) != 0 || d.Since != snap.Cursor || etag(h) != d.Cursor {
		t.Fatalf("empty delta %s", body)
	}

	n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(1), oid(3))))
	n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(3), oid(4)), upd("refs/heads/old", oid(2), z)))
	n.publish(t, newPush("acme/app", upd("refs/heads/tmp", z, oid(5))))
	n.publish(t, newPush("acme/app", upd("refs/heads/tmp", oid(5), z)))
	n.publish(t, newPush("acme/app", upd("refs/tags/v1", z, oid(6))))
	n.publish(t, newPush("acme/lib", upd("refs/heads/main", z, oid(7))))
	st, _, body = n.get(t, path+"&"+query("since", snap.Cursor), nil)
	d = deltaBody{}
	if err := json.Unmarshal(body, &d); st != 200 || err != nil {
		t.Fatalf("%d %s", st, body)
	}
	want := []wire.Change{
		{Repo: "acme/app", Ref: "refs/heads/main", Old: oid(1), New: oid(4), Kind: bus.KindUpdate},
		{Repo: "acme/app", Ref: "refs/heads/old", Old: oid(2), New: z, Kind: bus.KindDelete},
		{Repo: "acme/app", Ref: "refs/tags/v1", Old: z, New: oid(6), Kind: bus.KindCreate},
	}
	if d.Reset || !slices.Equal(d.Changes, want) {
		t.Fatalf("delta %s\nwant %+v", body, want)
	}
	// From the delta's cursor, nothing more.
	st, _, body = n.get(t, path+"&"+query("since", d.Cursor), nil)
	var d2 deltaBody
	if err := json.Unmarshal(body, &d2); st != 200 || err != nil || len(d2.Changes) != 0 || d2.Reset {
		t.Fatalf("delta from the delta's cursor: %d %s", st, body)
	}

	// Far behind: reset with the full snapshot.
	for i := range 10 {
		n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(4+i), oid(5+i))))
	}
	st, _, body = n.get(t, path+"&"+query("since", snap.Cursor), nil)
	var r snapshotBody
	if err := json.Unmarshal(body, &r); st != 200 || err != nil {
		t.Fatalf("%d %s", st, body)
	}
	if !r.Reset || len(r.Repos) != 1 || r.Repos[0].Refs["refs/heads/main"] != oid(14) || r.Repos[0].Refs["refs/tags/v1"] != oid(6) {
		t.Fatalf("delta from a trimmed cursor: %s", body)
	}
}

func TestRefsLongPoll(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) { o.Heartbeat = 100 * time.Millisecond })
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1))))
	path := "/v1/refs?" + query("repo", "acme/app", "ref", "refs/heads/*")
	_, h, _ := n.get(t, path, nil)
	tag := etag(h)

	t.Run("released by a publish", func(t *testing.T) {
		type answer struct {
			st   int
			h    http.Header
			body []byte
		}
		// wait=60s: a 200 can only come from the publish releasing the
		// poll (the wait running out answers 304), so nothing here
		// depends on how fast a loaded machine is.
		ch := make(chan answer, 1)
		go func() {
			st, h, body := n.get(t, path+"&"+query("wait", "60s"), map[string]string{"If-None-Match": `"` + tag + `"`})
			ch <- answer{st, h, body}
		}()
		eventually(t, 2*time.Second, "long-poll to register", func() bool { return n.metric(t, "refcast_connections") == 1 })
		// Noise outside the filter does not release it.
		n.publish(t, newPush("acme/app", upd("refs/tags/v1", z, oid(2))))
		n.publish(t, newPush("acme/lib", upd("refs/heads/main", z, oid(3))))
		time.Sleep(150 * time.Millisecond)
		select {
		case a := <-ch:
			t.Fatalf("released by noise: %d %s", a.st, a.body)
		default:
		}
		n.publish(t, newPush("acme/app", upd("refs/heads/main", oid(1), oid(4))))
		a := <-ch
		if a.st != 200 {
			t.Fatalf("answer %d: %s", a.st, a.body)
		}
		var snap snapshotBody
		if err := json.Unmarshal(a.body, &snap); err != nil || snap.Repos[0].Refs["refs/heads/main"] != oid(4) || etag(a.h) != snap.Cursor {
			t.Fatalf("answer %s", a.body)
		}
		tag = snap.Cursor
	})

	t.Run("delta released by a publish", func(t *testing.T) {
		ch := make(chan []byte, 1)
		go func() {
			_, _, body := n.get(t, path+"&"+query("wait", "60s", "since", tag), nil)
			ch <- body
		}()
		eventually(t, 2*time.Second, "long-poll to register", func() bool { return n.metric(t, "refcast_connections") == 1 })
		n.publish(t, newPush("acme/app", upd("refs/heads/dev", z, oid(5))))
		// Only the publish can release it with a change within wait=60s.
		body := <-ch
		var d deltaBody
		if err := json.Unmarshal(body, &d); err != nil || len(d.Changes) != 1 || d.Changes[0].Ref != "refs/heads/dev" {
			t.Fatalf("delta long-poll not released by a matching publish: %s", body)
		}
		tag = d.Cursor
	})

	t.Run("times out with 304", func(t *testing.T) {
		start := time.Now()
		st, h, body := n.get(t, path+"&"+query("wait", "300ms"), map[string]string{"If-None-Match": `"` + tag + `"`})
		// Only a lower bound: load can lengthen the wait, never shorten it.
		if el := time.Since(start); st != 304 || len(body) != 0 || etag(h) != tag || el < 300*time.Millisecond {
			t.Fatalf("%d after %v, ETag %q: want 304 once the 300ms wait ran out, with ETag %q", st, el, h.Get("ETag"), tag)
		}
	})

	for _, tc := range []struct{ name, q, msg string }{
		{"wait without cursor", query("repo", "acme/app", "wait", "1s"), "cursor"},
		{"bad wait", query("repo", "acme/app", "wait", "soon", "since", tag), "wait"},
		{"negative wait", query("repo", "acme/app", "wait", "-1s", "since", tag), "wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _, body := n.get(t, "/v1/refs?"+tc.q, nil)
			if st != 400 {
				t.Fatalf("%d %s", st, body)
			}
			if msg := apiErrorBody(t, 400, body); !strings.Contains(msg, tc.msg) {
				t.Fatalf("message %q does not mention %q", msg, tc.msg)
			}
		})
	}
	eventually(t, 2*time.Second, "long-polls to unregister", func() bool { return n.metric(t, "refcast_connections") == 0 })
}

// TestRefsLongPollGlob: a long-poll whose repo is a glob is matched by the
// glob stage, not the repo index; a publish to a matching repo releases it
// (wait=60s: only the publish can answer 200), one to another repo does
// not.
func TestRefsLongPollGlob(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, nil)
	n.publish(t, newPush("acme/app", upd("refs/heads/main", z, oid(1))))
	path := "/v1/refs?" + query("repo", "acme/a*")
	_, h, _ := n.get(t, path, nil)
	tag := etag(h)
	type answer struct {
		st   int
		body []byte
	}
	ch := make(chan answer, 1)
	go func() {
		st, _, body := n.get(t, path+"&"+query("wait", "60s"), map[string]string{"If-None-Match": `"` + tag + `"`})
		ch <- answer{st, body}
	}()
	eventually(t, 2*time.Second, "long-poll to register", func() bool { return n.metric(t, "refcast_connections") == 1 })
	n.publish(t, newPush("acme/lib", upd("refs/heads/main", z, oid(2))))
	n.waitDispatched(t)
	select {
	case a := <-ch:
		t.Fatalf("released by a repo outside the glob: %d %s", a.st, a.body)
	default:
	}
	n.publish(t, newPush("acme/api", upd("refs/heads/main", z, oid(3))))
	a := <-ch
	var snap snapshotBody
	if err := json.Unmarshal(a.body, &snap); a.st != 200 || err != nil || len(snap.Repos) != 2 {
		t.Fatalf("answer %d: %s", a.st, a.body)
	}
}
