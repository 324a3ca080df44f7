package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/refcast/refcast/web"
)

// TestPageBehaviour drives the page in Chromium against a scripted node, to
// check what the real one does not provoke on demand: overlapping replays,
// resets, sync events, hostile data, the feed bound and refused requests.

// fakeNode speaks just enough of the protocol: cursors are "c<n>", n the
// number of events before the position.
type fakeNode struct {
	mu      sync.Mutex
	cond    *sync.Cond
	events  [][2]string       // (event name, data) by position-1; guarded by mu
	refs    map[string]string // current state of acme/app; guarded by mu
	conns   int               // streams opened; guarded by mu
	gen     int               // bumped to end every open stream; guarded by mu
	overlap int               // the next stream replays this many events before its cursor; guarded by mu
	reset   string            // the next stream answers with a reset for this reason; guarded by mu
	lastIDs []string          // Last-Event-ID and since of each stream; guarded by mu
	refGets int               // /v1/refs requests; guarded by mu
	tokens  map[string]int    // access_token values seen, by count; guarded by mu
}

func newFakeNode() *fakeNode {
	n := &fakeNode{refs: map[string]string{"refs/heads/main": strings.Repeat("1", 40)}, tokens: map[string]int{}}
	n.cond = sync.NewCond(&n.mu)
	return n
}

func (n *fakeNode) publish(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	n.mu.Lock()
	if m, ok := v.(map[string]any); ok && name == "ref" {
		ref, _ := m["ref"].(string)
		if m["kind"] == "delete" {
			delete(n.refs, ref)
		} else {
			n.refs[ref], _ = m["new"].(string)
		}
	}
	n.events = append(n.events, [2]string{name, string(b)})
	n.mu.Unlock()
	n.cond.Broadcast()
}

// dropStreams ends every open stream, as a node restart would.
func (n *fakeNode) dropStreams() {
	n.mu.Lock()
	n.gen++
	n.mu.Unlock()
	n.cond.Broadcast()
}

func (n *fakeNode) snapshot() map[string]any {
	refs := map[string]string{}
	for k, v := range n.refs {
		refs[k] = v
	}
	return map[string]any{"cursor": "c" + strconv.Itoa(len(n.events)), "repos": []any{map[string]any{"repo": "acme/app", "refs": refs}}}
}

func (n *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n.mu.Lock()
	n.tokens[q.Get("access_token")]++
	n.mu.Unlock()
	if q.Get("repo") == "bad/[" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid repo pattern \"bad/[\"","status":400}`)
		return
	}
	switch r.URL.Path {
	case "/v1/refs":
		n.mu.Lock()
		n.refGets++
		b, _ := json.Marshal(n.snapshot())
		n.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	case "/v1/events":
		n.stream(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (n *fakeNode) stream(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = r.URL.Query().Get("since")
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	fl := w.(http.Flusher)
	fmt.Fprint(w, "retry: 300\n\n")

	n.mu.Lock()
	n.conns++
	n.lastIDs = append(n.lastIDs, id)
	gen := n.gen
	pos := len(n.events)
	if strings.HasPrefix(id, "c") {
		if p, err := strconv.Atoi(id[1:]); err == nil && p <= len(n.events) {
			pos = max(0, p-n.overlap)
		}
	}
	n.overlap = 0
	if n.reset != "" {
		pos = len(n.events)
		s := n.snapshot()
		s["reason"] = n.reset
		b, _ := json.Marshal(s)
		n.reset = ""
		fmt.Fprintf(w, "id: c%d\nevent: reset\ndata: %s\n\n", pos, b)
	}
	stop := clientGone(r, n)
	hello := false
	for {
		for pos < len(n.events) {
			e := n.events[pos]
			pos++
			fmt.Fprintf(w, "id: c%d\nevent: %s\ndata: %s\n\n", pos, e[0], e[1])
		}
		if !hello {
			fmt.Fprintf(w, "id: c%d\nevent: hello\ndata: {\"cursor\":\"c%d\"}\n\n", pos, pos)
			hello = true
		}
		n.mu.Unlock()
		fl.Flush()
		n.mu.Lock()
		for pos == len(n.events) && n.gen == gen && !stop() {
			n.cond.Wait()
		}
		if n.gen != gen || stop() {
			n.mu.Unlock()
			return
		}
	}
}

// clientGone wakes the stream's waiter when the client goes away and
// reports whether it did.
func clientGone(r *http.Request, n *fakeNode) func() bool {
	done := r.Context().Done()
	go func() {
		<-done
		n.cond.Broadcast()
	}()
	return func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
}

func refEvent(i int, ref, old, new, subject string) map[string]any {
	return map[string]any{
		"v": 1, "repo": "acme/app", "ref": ref, "old": old, "new": new, "kind": "update",
		"push": fmt.Sprintf("p-%d", i), "time": time.Now().UTC().Format(time.RFC3339),
		"pusher": "bob", "commit": map[string]any{"subject": subject, "author": "Ada"},
	}
}

func sha(i int) string { return fmt.Sprintf("%040x", i) }

func TestPageBehaviour(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	browser := os.Getenv("REFCAST_CHROMIUM")
	if browser == "" {
		browser = "/usr/bin/chromium"
	}
	browser = requireTool(t, "Chromium", browser)

	node := newFakeNode()
	mux := http.NewServeMux()
	mux.Handle("/v1/", node)
	mux.Handle("/", web.Handler(web.Options{Title: "Fake", CommitURL: "https://git.example.com/{repo}/commit/{sha}"}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(node.dropStreams) // let open streams end before srv.Close waits for them

	ctx := newBrowser(t, browser)
	// A page URL may override the link template, but never with a script.
	page := srv.URL + "/?" + url.Values{"repo": {"acme/app"}, "commit": {"javascript:alert(1)//{sha}"}, "token": {"s3cret"}}.Encode()
	do(t, ctx, "open", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)))
	rows := func() []string {
		return evaluate[[]string](t, ctx, `[...document.querySelectorAll('#feed li.entry[data-ref]')].map(li => li.dataset.new)`)
	}

	t.Run("hostile data is text", func(t *testing.T) {
		evil := `<img src=x onerror="document.body.dataset.pwned=1">`
		node.publish("ref", refEvent(1, "refs/heads/main", sha(0x1111), sha(1), evil))
		do(t, ctx, "row", chromedp.WaitVisible(chromedp.CSS(`#feed li[data-new="`+sha(1)+`"]`)))
		if n := evaluate[int](t, ctx, `document.querySelectorAll('#feed img').length`); n != 0 {
			t.Errorf("subject became %d <img> elements", n)
		}
		if got := evaluate[string](t, ctx, `document.querySelector('#feed .subject').textContent`); got != evil {
			t.Errorf("subject text %q, want %q", got, evil)
		}
		href := evaluate[string](t, ctx, `document.querySelector('#feed li[data-new="`+sha(1)+`"] a.sha[title="`+sha(1)+`"]').href`)
		if want := "https://git.example.com/acme/app/commit/" + sha(1); href != want {
			t.Errorf("link %q, want %q (the server's template, not the page URL's script)", href, want)
		}
	})

	t.Run("overlapping replay is deduplicated", func(t *testing.T) {
		node.mu.Lock()
		node.overlap = 1 // replay the last event the page already has
		node.mu.Unlock()
		node.dropStreams()
		node.publish("ref", refEvent(2, "refs/heads/main", sha(1), sha(2), "second"))
		do(t, ctx, "row", chromedp.WaitVisible(chromedp.CSS(`#feed li[data-new="`+sha(2)+`"]`)))
		do(t, ctx, "live", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)), chromedp.Sleep(300*time.Millisecond))
		if got, want := rows(), []string{sha(2), sha(1)}; !slices.Equal(got, want) {
			t.Errorf("rows %v, want %v", got, want)
		}
		node.mu.Lock()
		last := node.lastIDs[len(node.lastIDs)-1]
		node.mu.Unlock()
		if last != "c1" {
			t.Errorf("reconnected from %q, want c1 (the last cursor the page saw)", last)
		}
	})

	t.Run("reset replaces the state", func(t *testing.T) {
		node.mu.Lock()
		node.refs = map[string]string{"refs/heads/main": sha(3), "refs/tags/v2": sha(4)}
		node.reset = "the history was lost"
		node.mu.Unlock()
		node.dropStreams()
		do(t, ctx, "notice", chromedp.WaitVisible(chromedp.CSS(`#feed li.notice-reset`)))
		do(t, ctx, "status", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="resynced"]`)))
		do(t, ctx, "table", chromedp.WaitVisible(chromedp.CSS(`#repos tr[data-ref="refs/tags/v2"][data-sha="`+sha(4)+`"]`)))
		do(t, ctx, "table", chromedp.WaitVisible(chromedp.CSS(`#repos tr[data-ref="refs/heads/main"][data-sha="`+sha(3)+`"]`)))
	})

	t.Run("sync refetches the repo", func(t *testing.T) {
		node.mu.Lock()
		before := node.refGets
		node.refs = map[string]string{"refs/heads/seeded": sha(5)}
		node.mu.Unlock()
		node.publish("sync", map[string]any{"v": 1, "repo": "acme/app", "kind": "sync", "push": "seed-1", "time": time.Now().UTC().Format(time.RFC3339), "refs": 1})
		do(t, ctx, "table", chromedp.WaitVisible(chromedp.CSS(`#repos tr[data-ref="refs/heads/seeded"]`)))
		if n := evaluate[int](t, ctx, `document.querySelectorAll('#repos tr[data-ref="refs/tags/v2"]').length`); n != 0 {
			t.Error("a ref gone from the seeded state is still listed")
		}
		node.mu.Lock()
		after := node.refGets
		node.mu.Unlock()
		if after != before+1 {
			t.Errorf("%d snapshot requests for one sync, want 1", after-before)
		}
	})

	t.Run("feed is bounded", func(t *testing.T) {
		for i := 10; i < 560; i++ {
			node.publish("ref", refEvent(i, "refs/heads/busy", sha(i-1), sha(i), "busy"))
		}
		do(t, ctx, "last row", chromedp.WaitVisible(chromedp.CSS(`#feed li[data-new="`+sha(559)+`"]`)))
		if n := evaluate[int](t, ctx, `document.querySelectorAll('#feed > li').length`); n != 500 {
			t.Errorf("feed holds %d entries, want 500", n)
		}
	})

	t.Run("token is passed on every request", func(t *testing.T) {
		node.mu.Lock()
		defer node.mu.Unlock()
		if len(node.tokens) != 1 || node.tokens["s3cret"] == 0 {
			t.Errorf("access_token values seen: %v, want only s3cret", node.tokens)
		}
	})

	t.Run("form keeps the view in the URL", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			submit chromedp.Action[chromedp.Void]
		}{
			{"button", chromedp.Click(chromedp.CSS(`#filter button[type="submit"]`))},
			{"without the script's handler", chromedp.Submit(chromedp.CSS("#f-repo"))},
		} {
			t.Run(tc.name, func(t *testing.T) {
				do(t, ctx, "submit",
					chromedp.SetValue(chromedp.CSS("#f-repo"), "acme/app, acme/lib"),
					chromedp.SetValue(chromedp.CSS("#f-ref"), "refs/heads/* ^refs/heads/wip/*"),
					evalVoid(`document.body.dataset.before = "1"`),
					tc.submit,
					chromedp.WaitNotPresent(chromedp.CSS(`body[data-before]`)),
					chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)))
				loc := evaluate[string](t, ctx, `location.search`)
				q, err := url.ParseQuery(strings.TrimPrefix(loc, "?"))
				if err != nil {
					t.Fatal(err)
				}
				if got, want := q["repo"], []string{"acme/app", "acme/lib"}; !slices.Equal(got, want) {
					t.Errorf("repo params %q, want %q", got, want)
				}
				if got, want := q["ref"], []string{"refs/heads/*", "^refs/heads/wip/*"}; !slices.Equal(got, want) {
					t.Errorf("ref params %q, want %q", got, want)
				}
				if q.Get("token") != "s3cret" || q.Get("commit") == "" {
					t.Errorf("the form dropped token or commit: %s", loc)
				}
			})
		}
	})

	t.Run("refused request stops with the reason", func(t *testing.T) {
		do(t, ctx, "open", chromedp.Navigate(srv.URL+"/?repo=bad/["),
			chromedp.WaitVisible(chromedp.CSS(`#status[data-state="error"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#error`)))
		msg := evaluate[string](t, ctx, `document.querySelector('#error').textContent`)
		if !strings.Contains(msg, `invalid repo pattern "bad/["`) {
			t.Errorf("error %q does not carry the node's reason", msg)
		}
	})
}

// evalVoid runs js in the page for its effect.
func evalVoid(js string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[any](js)(ctx, t)
		return chromedp.Void{}, err
	}
}
