package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// resetReceiver records "ref=after[ reset]" per delivery of the refcast
// format, in arrival order.
type resetReceiver struct {
	mu  sync.Mutex
	got []string
}

func newResetReceiver(t *testing.T) (*resetReceiver, *httptest.Server) {
	rc := &resetReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var e bus.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Errorf("body: %v", err)
		}
		s := e.Ref + "=" + strings.TrimLeft(e.New, "0")
		if r.Header.Get("X-Refcast-Reset") == "true" {
			s += " reset"
		}
		rc.mu.Lock()
		rc.got = append(rc.got, s)
		rc.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *resetReceiver) since(n int) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got[n:])
}

func newResetRelay(t *testing.T, url string, opts Options) *Relay {
	t.Helper()
	f, _ := ParseFormat("refcast")
	opts.Targets = []*Target{{Name: "flux", URL: url, Format: f, Secret: []byte(secret), Refs: []string{"refs/heads/*"}}}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(time.Second) })
	return r
}

func handleAll(t *testing.T, r *Relay, ups []Update) {
	t.Helper()
	for _, u := range ups {
		if err := r.Handle(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRelayResetAfterRestart: a new Relay resumed from what the first one
// remembered (as the state file carries it) sends, for a reset, only the
// refs whose id differs from the last delivered, and deletions for the
// refs remembered that the snapshot lacks; resumed with a cursor only (a
// state file of an older version) it sends every ref of the snapshot.
func TestRelayResetAfterRestart(t *testing.T) {
	// b0 b1 b2 main (forced) old (deleted), 50 tags no target wants.
	ups := bigPush("org/a", 0)
	// The node lost its history: b0 and main unchanged, b1 moved, b2
	// gone, new added, a tag moved (no target wants tags).
	snap := map[string]string{
		"refs/heads/b0": sha(1), "refs/heads/b1": sha(77), "refs/heads/main": sha(101),
		"refs/heads/new": sha(88), "refs/tags/v1.0": sha(99),
	}
	tests := []struct {
		name     string
		withRefs bool
		want     []string
	}{
		{"refs kept", true, []string{at("b1", 77), at("b2", 0), at("new", 88)}},
		{"cursor only", false, []string{at("b0", 1), at("b1", 77), at("main", 101), at("new", 88)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, srv := newResetReceiver(t)
			r := newResetRelay(t, srv.URL, Options{})
			handleAll(t, r, ups)
			waitSafe(t, r, ups[len(ups)-1].Cursor)
			r.Close(time.Second)
			cursor, refs := r.Remembered()
			if want := map[string]string{"refs/heads/b0": sha(1), "refs/heads/b1": sha(2), "refs/heads/b2": sha(3), "refs/heads/main": sha(101)}; !mapsEqual(refs["org/a"], want) || len(refs) != 1 {
				t.Fatalf("remembered %v, want %v", refs, want)
			}
			if !tt.withRefs {
				refs = nil
			}
			before := len(rc.since(0))

			r2 := newResetRelay(t, srv.URL, Options{})
			r2.Resume(cursor, refs)
			rs := wire.Reset{Cursor: "snap", Repos: []wire.RepoRefs{{Repo: "org/a", Refs: snap}}}
			if err := r2.HandleReset(context.Background(), rs); err != nil {
				t.Fatal(err)
			}
			waitSafe(t, r2, "snap")
			if got := rc.since(before); !slices.Equal(got, tt.want) {
				t.Errorf("reset delivered %q, want %q", got, tt.want)
			}
			// What the reset delivered is remembered: the same reset again
			// sends nothing.
			_, refs = r2.Remembered()
			if want := map[string]string{"refs/heads/b0": sha(1), "refs/heads/b1": sha(77), "refs/heads/main": sha(101), "refs/heads/new": sha(88)}; !mapsEqual(refs["org/a"], want) {
				t.Errorf("remembered after the reset %v, want %v", refs["org/a"], want)
			}
			n := len(rc.since(0))
			rs.Cursor = "snap2"
			if err := r2.HandleReset(context.Background(), rs); err != nil {
				t.Fatal(err)
			}
			waitSafe(t, r2, "snap2")
			if got := rc.since(n); len(got) != 0 {
				t.Errorf("an unchanged snapshot delivered %q", got)
			}
		})
	}
}

// at is what resetReceiver records for a reset delivery of branch set to
// sha(n) (0: deleted).
func at(branch string, n int) string {
	if n == 0 {
		return "refs/heads/" + branch + "= reset"
	}
	return fmt.Sprintf("refs/heads/%s=%x reset", branch, n)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestRelayRememberedBound: past MaxRefs a ref is not remembered, and a
// reset sends it though it did not change (never skips it); an update not
// yet delivered by every target is not remembered either.
func TestRelayRememberedBound(t *testing.T) {
	rc, srv := newResetReceiver(t)
	r := newResetRelay(t, srv.URL, Options{MaxRefs: 2})
	ups := bigPush("org/a", 0)[:3] // b0 b1 b2
	handleAll(t, r, ups)
	waitSafe(t, r, ups[2].Cursor)
	cursor, refs := r.Remembered()
	if want := map[string]string{"refs/heads/b0": sha(1), "refs/heads/b1": sha(2)}; !mapsEqual(refs["org/a"], want) {
		t.Fatalf("remembered %v, want the first 2 refs %v", refs, want)
	}
	n := len(rc.since(0))
	rs := wire.Reset{Cursor: "snap", Repos: []wire.RepoRefs{{Repo: "org/a", Refs: map[string]string{
		"refs/heads/b0": sha(1), "refs/heads/b1": sha(2), "refs/heads/b2": sha(3),
	}}}}
	if err := r.HandleReset(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	waitSafe(t, r, "snap")
	if got := rc.since(n); !slices.Equal(got, []string{at("b2", 3)}) {
		t.Errorf("reset delivered %q, want the ref past the bound", got)
	}

	// A restart with more refs than the bound keeps the first in order.
	r2 := newResetRelay(t, srv.URL, Options{MaxRefs: 1})
	r2.Resume(cursor, refs)
	if _, got := r2.Remembered(); !mapsEqual(got["org/a"], map[string]string{"refs/heads/b0": sha(1)}) {
		t.Errorf("resumed with bound 1: remembered %v", got)
	}
}

// TestRelayRememberedOnlyDelivered: while a target has not acknowledged an
// update, Remembered keeps the id delivered before it.
func TestRelayRememberedOnlyDelivered(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), sha(5)) {
			<-release
		}
	}))
	defer srv.Close()
	defer close(release)
	r := newResetRelay(t, srv.URL, Options{})
	ev := func(c, id string) Update {
		return Update{Cursor: c, Event: bus.Event{V: 1, Repo: "org/a", Ref: "refs/heads/main", Old: sha(1), New: id, Kind: bus.KindUpdate, PushID: "p" + c}}
	}
	handleAll(t, r, []Update{ev("c1", sha(4))})
	waitSafe(t, r, "c1")
	handleAll(t, r, []Update{ev("c2", sha(5))})
	if c, refs := r.Remembered(); c != "c1" || refs["org/a"]["refs/heads/main"] != sha(4) {
		t.Errorf("remembered %q %v while c2 is in flight, want c1 and %s", c, refs, sha(4))
	}
}
