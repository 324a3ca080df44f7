package web_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/server"
	"github.com/refcast/refcast/web"
)

// TestDashboardHistoryPickerHint drives the page in Chromium against a real
// node on the memory bus: it opens with the last events, offers the repos
// from /v1/repos in a filterable list, and shows the node's hint for a
// mistyped repo instead of a bare "0 refs".
func TestDashboardHistoryPickerHint(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	browser := os.Getenv("REFCAST_CHROMIUM")
	if browser == "" {
		browser = "/usr/bin/chromium"
	}
	browser = requireTool(t, "Chromium", browser)

	b, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	sha := func(i int) string { return fmt.Sprintf("%040x", i) }
	publish := func(repo, ref, old, new string) {
		t.Helper()
		p := &bus.Push{ID: fmt.Sprintf("p-%s-%s", strings.ReplaceAll(repo, "/", "."), new[32:]), Repo: repo,
			Time: time.Now().UTC(), Source: "api", Updates: []bus.RefUpdate{{Ref: ref, Old: old, New: new}}}
		if _, err := b.Publish(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 25; i++ {
		old := sha(i - 1)
		if i == 1 {
			old = bus.ZeroSHA1
		}
		publish("demo/app", "refs/heads/main", old, sha(i))
	}
	publish("demo/web", "refs/heads/main", bus.ZeroSHA1, sha(100))
	publish("acme/lib", "refs/tags/v1", bus.ZeroSHA1, sha(200))

	srv, err := server.New(server.Options{Bus: b, Logger: slog.New(slog.DiscardHandler), Dashboard: web.Handler(web.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln, 100*time.Millisecond) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	requireDashboard(t, base)

	ctx := newBrowser(t, browser)
	page := func(repo string) string { return base + "/?" + url.Values{"repo": {repo}}.Encode() }

	do(t, ctx, "open demo/app", chromedp.Navigate(page("demo/app")),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#feed li.entry.past`)))
	rows := evaluate[[]string](t, ctx, `[...document.querySelectorAll('#feed li.entry.past')].map(li => li.dataset.new)`)
	var want []string
	for i := 25; i > 5; i-- {
		want = append(want, sha(i))
	}
	if !slices.Equal(rows, want) {
		t.Errorf("history rows %d, want the last 20 events newest first:\n got %q\nwant %q", len(rows), rows, want)
	}
	if h := evaluate[bool](t, ctx, `document.getElementById("repo-hint").hidden`); !h {
		t.Error("a repo with refs shows a hint")
	}

	do(t, ctx, "picker", chromedp.WaitVisible(chromedp.CSS(`#p-list option`)))
	opts := evaluate[[]string](t, ctx, `[...document.querySelectorAll('#p-list option')].map(o => o.value)`)
	if !slices.Equal(opts, []string{"acme/lib", "demo/app", "demo/web"}) {
		t.Errorf("picker %q, want every repo, sorted", opts)
	}
	do(t, ctx, "filter the picker", evalVoid(`const f = document.getElementById("p-filter"); f.value = "WEB"; f.dispatchEvent(new Event("input"))`))
	opts = evaluate[[]string](t, ctx, `[...document.querySelectorAll('#p-list option')].map(o => o.value)`)
	if !slices.Equal(opts, []string{"demo/web"}) {
		t.Errorf("filtered picker %q, want demo/web", opts)
	}
	do(t, ctx, "choose demo/web", evalVoid(`const l = document.getElementById("p-list"); l.value = "demo/web"; l.dispatchEvent(new Event("change"))`),
		chromedp.WaitVisible(chromedp.CSS(`#repos .repo-card[data-repo="demo/web"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)))
	if q := evaluate[string](t, ctx, `location.search`); q != "?repo=demo%2Fweb" {
		t.Errorf("after choosing, the address is %q, want ?repo=demo%%2Fweb", q)
	}

	do(t, ctx, "open a typo", chromedp.Navigate(page("demo/ap")),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#repo-hint`)))
	hint := evaluate[string](t, ctx, `document.getElementById("repo-hint").textContent`)
	if !strings.Contains(hint, "no refs known for demo/ap") || !strings.Contains(hint, "demo/app") {
		t.Errorf("hint %q, want it to name demo/ap and suggest demo/app", hint)
	}
	card := evaluate[string](t, ctx, `document.querySelector('#repos .repo-card[data-repo="demo/ap"]')?.textContent || ""`)
	if !strings.Contains(card, "see the note above") {
		t.Errorf("card %q, want it to point at the hint", card)
	}
}
