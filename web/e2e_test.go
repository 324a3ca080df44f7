package web_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/refcast/refcast/internal/testnode"
)

// The end-to-end test drives the real binary, the real git and a headless
// Chromium: it opens the dashboard, pushes through the installed hook, kills
// and restarts the node on the same port and data directory, pushes again,
// and checks the page resumed from its cursor: every push shows exactly once.
//
// Environment:
//
//	REFCAST_CHROMIUM   browser to drive (default /usr/bin/chromium)
//	REFCAST_ARTIFACTS  directory for the screenshots (default: a temporary
//	                   directory, logged)
//	CI=true            a missing browser or git fails the test instead of
//	                   skipping it

const (
	publishToken = "T"
	e2eRepo      = "acme/app"
	commitTmpl   = "https://git.example.com/{repo}/commit/{sha}"
)

func requireTool(t *testing.T, what, path string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("browser end-to-end test needs %s (%s): %v", what, path, err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Log("!!!!!!!! SKIPPING: " + msg + " !!!!!!!!")
	t.Skip(msg)
	return ""
}

func TestDashboardEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("browser end-to-end test skipped in -short mode")
	}
	browser := os.Getenv("REFCAST_CHROMIUM")
	if browser == "" {
		browser = "/usr/bin/chromium"
	}
	browser = requireTool(t, "Chromium", browser)
	gitBin := requireTool(t, "git", "git")

	tmp := t.TempDir()
	artifacts := os.Getenv("REFCAST_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(tmp, "artifacts")
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	bin := testnode.Build(t)
	addr := testnode.FreeAddr(t)
	base := "http://" + addr
	data := filepath.Join(tmp, "data")
	serveArgs := []string{"--data", data, "--publish-token", publishToken, "--drain", "1s"}

	n1 := testnode.Start(t, bin, addr, serveArgs...)
	requireDashboard(t, base)

	g := newGit(t, gitBin, tmp)
	bare := filepath.Join(tmp, "app.git")
	g.run("", "init", "--bare", "--initial-branch=main", bare)
	g.run("", "-C", bare, "config", "refcast.repo", e2eRepo)
	g.run("", "-C", bare, "config", "refcast.token", publishToken)
	if out, err := g.cmd("", bin, "install-hook", bare, "--url", base).CombinedOutput(); err != nil {
		t.Fatalf("refcast install-hook: %v\n%s", err, out)
	}
	work := filepath.Join(tmp, "work")
	g.run("", "init", "--initial-branch=main", work)
	g.run(work, "remote", "add", "origin", bare)

	ctx := newBrowser(t, browser)
	page := base + "/?" + url.Values{"repo": {e2eRepo}, "commit": {commitTmpl}}.Encode()
	do(t, ctx, "open the page", chromedp.Navigate(page))
	do(t, ctx, "wait until live", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)))

	// First push: one new row, and the ref table follows.
	sha1 := g.commitAndPush(work, "Add the greeting", "Ada Lovelace")
	waitRow(t, ctx, sha1)
	do(t, ctx, "ref table shows the first commit",
		chromedp.WaitVisible(chromedp.CSS(`#repos tr[data-ref="refs/heads/main"][data-sha="`+sha1+`"]`)))

	// Kill the node: the page must notice and keep trying.
	n1.Kill()
	do(t, ctx, "page shows reconnecting", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="reconnecting"]`)))

	// Restart on the same port and data; push at once, likely before the
	// page reconnects, so the update reaches it by replay from its cursor
	// (or live, if it was quicker). Either way: exactly one new row.
	testnode.Start(t, bin, addr, serveArgs...)
	sha2 := g.commitAndPush(work, "Wave back", "Grace Hopper")
	do(t, ctx, "second row or a reset",
		chromedp.WaitVisible(chromedp.CSS(`#feed li.entry[data-new="`+sha2+`"], #feed li.notice-reset`)))
	if reason := evaluate[string](t, ctx, `document.querySelector('#feed li.notice-reset')?.innerText ?? ''`); reason != "" {
		// A reset may legitimately carry the second push in its snapshot
		// instead of the feed, so there is no row to wait for: say why.
		t.Fatalf("the restarted node (same --data) did not honour the page's cursor; it sent a reset:\n%s", reason)
	}
	waitRow(t, ctx, sha2)
	do(t, ctx, "live again", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)))
	do(t, ctx, "ref table shows the second commit",
		chromedp.WaitVisible(chromedp.CSS(`#repos tr[data-ref="refs/heads/main"][data-sha="`+sha2+`"]`)))

	// Let a duplicate, if any, arrive before counting.
	do(t, ctx, "settle", chromedp.Sleep(1500*time.Millisecond))
	rows := evaluate[[]string](t, ctx, `[...document.querySelectorAll('#feed li.entry[data-ref]')].map(li => li.dataset.new)`)
	if want := []string{sha2, sha1}; !slices.Equal(rows, want) {
		t.Errorf("feed rows (newest first) = %v, want %v", rows, want)
	}
	keys := evaluate[[]string](t, ctx, `[...document.querySelectorAll('#feed li[data-key]')].map(li => li.dataset.key)`)
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Errorf("feed shows %q twice", k)
		}
		seen[k] = true
	}
	if n := evaluate[int](t, ctx, `document.querySelectorAll('#feed li.notice-reset').length`); n != 0 {
		t.Errorf("the page was reset (%d times) instead of resuming from its cursor", n)
	}
	if n := evaluate[int](t, ctx, `document.querySelectorAll('#feed > li').length`); n != 2 {
		t.Errorf("feed holds %d entries, want the 2 pushes", n)
	}

	// The row says what happened, with the hook's enrichment and a link.
	first := evaluate[string](t, ctx, `document.querySelector('#feed li.entry[data-new="`+sha1+`"]').innerText`)
	for _, s := range []string{"create", "main", e2eRepo, sha1[:7], "Add the greeting", "Ada Lovelace"} {
		if !strings.Contains(strings.ToLower(first), strings.ToLower(s)) {
			t.Errorf("first row lacks %q:\n%s", s, first)
		}
	}
	second := evaluate[string](t, ctx, `document.querySelector('#feed li.entry[data-new="`+sha2+`"]').innerText`)
	for _, s := range []string{"update", sha1[:7], sha2[:7], "Wave back", "Grace Hopper"} {
		if !strings.Contains(strings.ToLower(second), strings.ToLower(s)) {
			t.Errorf("second row lacks %q:\n%s", s, second)
		}
	}
	href := evaluate[string](t, ctx, `document.querySelector('#feed li.entry[data-new="`+sha2+`"] a.sha[title="`+sha2+`"]').href`)
	if want := "https://git.example.com/acme/app/commit/" + sha2; href != want {
		t.Errorf("commit link %q, want %q", href, want)
	}

	for _, scheme := range []string{"light", "dark"} {
		do(t, ctx, "emulate "+scheme, colorScheme(scheme))
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		p := filepath.Join(artifacts, "dashboard-e2e-"+scheme+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
}

// requireDashboard fails at once, with the fix, when the node does not serve
// the page at "/".
func requireDashboard(t *testing.T, base string) {
	t.Helper()
	res, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("the node does not serve the dashboard at / (status %d, %s): "+
			"refcast serve must set server.Options.Dashboard = web.Handler(...)", res.StatusCode, ct)
	}
}

// gitRunner runs git isolated from the user's configuration.
type gitRunner struct {
	t    *testing.T
	git  string
	env  []string
	tick int // commit timestamps, one per commit
}

func newGit(t *testing.T, gitBin, tmp string) *gitRunner {
	home := filepath.Join(tmp, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_STATE_HOME="+filepath.Join(home, ".state"),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_COMMITTER_NAME=refcast test", "GIT_COMMITTER_EMAIL=test@example.com",
	)
	return &gitRunner{t: t, git: gitBin, env: env}
}

func (g *gitRunner) cmd(dir, name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Env = g.env
	return c
}

func (g *gitRunner) run(dir string, args ...string) string {
	g.t.Helper()
	var stderr bytes.Buffer
	c := g.cmd(dir, g.git, args...)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		g.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// commitAndPush commits a change by author and pushes main; it returns the
// new commit id. The hook's output is logged.
func (g *gitRunner) commitAndPush(work, subject, author string) string {
	g.t.Helper()
	g.tick++
	f := filepath.Join(work, "greeting.txt")
	if err := os.WriteFile(f, []byte(subject+"\n"), 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.run(work, "add", "greeting.txt")
	email := strings.ToLower(strings.Fields(author)[0]) + "@example.com"
	g.run(work, "-c", "user.name="+author, "-c", "user.email="+email, "commit", "-q", "-m", subject)
	sha := g.run(work, "rev-parse", "HEAD")
	c := g.cmd(work, g.git, "push", "origin", "HEAD:refs/heads/main")
	out, err := c.CombinedOutput()
	if err != nil {
		g.t.Fatalf("git push: %v\n%s", err, out)
	}
	g.t.Logf("git push %s (%s):\n%s", sha[:7], subject, strings.TrimSpace(string(out)))
	return sha
}

// newBrowser starts a headless Chromium for the test, reporting any
// uncaught JavaScript exception or console error as a test failure.
func newBrowser(t *testing.T, browser string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.NoSandbox, // the test may run as root, where the sandbox refuses to start
		chromedp.WindowSize(1280, 860),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	t.Cleanup(func() { cancel(); cancelBrowser(); cancelAlloc() })

	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			p = "uncaught exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				p += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			p = "console.error:"
			for _, a := range ev.Args {
				p += " " + string(a.Value) + a.Description
			}
		default:
			return
		}
		mu.Lock()
		problems = append(problems, p)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("page: %s", p)
		}
	})
	return ctx
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			dumpPage(t, ctx)
		}
		t.Fatalf("%s: %v", what, err)
	}
}

func evaluate[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitRow waits for the feed row of sha on main.
func waitRow(t *testing.T, ctx context.Context, sha string) {
	t.Helper()
	do(t, ctx, "feed row for "+sha[:7],
		chromedp.WaitVisible(chromedp.CSS(`#feed li.entry[data-ref="refs/heads/main"][data-new="`+sha+`"]`)))
}

// dumpPage logs what the page shows, to tell a slow server from a page bug.
func dumpPage(t *testing.T, ctx context.Context) {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	text, err := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err == nil {
		t.Logf("page text:\n%s", text)
	}
}

func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return chromedp.Void{}, err
	}
}
