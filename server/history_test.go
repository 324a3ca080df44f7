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
)

func TestHistory(t *testing.T) {
	n := startNode(t, newBus(t, memory.Options{Partitions: 4}), time.Second, nil)
	for i := 1; i <= 30; i++ {
		old := oid(i - 1)
		if i == 1 {
			old = bus.ZeroSHA1
		}
		n.publish(t, newPush("demo/app", upd("refs/heads/main", old, oid(i))))
		if i%10 == 0 {
			n.publish(t, newPush("demo/web", upd("refs/tags/v"+string(rune('0'+i/10)), bus.ZeroSHA1, oid(i))))
		}
	}
	type ev struct{ Repo, Ref, New string }
	get := func(t *testing.T, q string) []ev {
		t.Helper()
		status, _, body := n.get(t, "/v1/history?"+q, nil)
		if status != http.StatusOK {
			t.Fatalf("status %d %s", status, body)
		}
		var r struct{ Events []ev }
		if err := json.Unmarshal(body, &r); err != nil || r.Events == nil {
			t.Fatalf("body %s: %v", body, err)
		}
		return r.Events
	}
	t.Run("the last events of a repo, oldest first", func(t *testing.T) {
		got := get(t, query("repo", "demo/app", "limit", "3"))
		want := []ev{{"demo/app", "refs/heads/main", oid(28)}, {"demo/app", "refs/heads/main", oid(29)}, {"demo/app", "refs/heads/main", oid(30)}}
		if !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("a glob over partitions, the default limit", func(t *testing.T) {
		got := get(t, query("repo", "demo/*"))
		if len(got) != DefaultHistoryLimit || got[len(got)-1] != (ev{"demo/web", "refs/tags/v3", oid(30)}) {
			t.Errorf("got %d events ending %v", len(got), got[len(got)-1])
		}
	})
	t.Run("ref patterns apply", func(t *testing.T) {
		got := get(t, query("repo", "demo/*", "ref", "refs/tags/*"))
		if len(got) != 3 || got[0].Ref != "refs/tags/v1" {
			t.Errorf("got %v, want the 3 tags", got)
		}
	})
	t.Run("a repo without events", func(t *testing.T) {
		if got := get(t, query("repo", "demo/none")); len(got) != 0 {
			t.Errorf("got %v", got)
		}
	})
	for _, tc := range []struct{ name, q, msg string }{
		{"no repo", query("limit", "3"), "repo"},
		{"limit zero", query("repo", "demo/app", "limit", "0"), "limit must be an integer from 1 to 100"},
		{"limit too big", query("repo", "demo/app", "limit", "101"), "limit must be an integer from 1 to 100"},
		{"unknown parameter", query("repo", "demo/app", "since", "x"), `unknown query parameter "since"`},
	} {
		t.Run("400 "+tc.name, func(t *testing.T) {
			status, _, body := n.get(t, "/v1/history?"+tc.q, nil)
			if status != http.StatusBadRequest {
				t.Fatalf("status %d %s", status, body)
			}
			if msg := apiErrorBody(t, status, body); !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q, want %q", msg, tc.msg)
			}
		})
	}
}
