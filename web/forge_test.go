package web_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/refcast/refcast/internal/testnode"
)

// TestDashboardShowsForgeWebhook: a GitHub push webhook delivered to
// /v1/hooks/github of a node reaches a dashboard watching the repo, with
// the forge's commit subject, exactly once although GitHub delivers it
// twice (the redelivery shares the delivery id).
func TestDashboardShowsForgeWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("browser end-to-end test skipped in -short mode")
	}
	browser := os.Getenv("REFCAST_CHROMIUM")
	if browser == "" {
		browser = "/usr/bin/chromium"
	}
	browser = requireTool(t, "Chromium", browser)

	const (
		secret = "dashboard-webhook-secret-0123"
		repo   = "github.com/codertocat/hello-world" // the payload's full_name, prefixed and lower-cased
		after  = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
	)
	body, err := os.ReadFile("../forge/testdata/github-push.json")
	if err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(t.TempDir(), "secrets")
	if err := os.WriteFile(secrets, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := testnode.Build(t)
	addr := testnode.FreeAddr(t)
	base := "http://" + addr
	testnode.Start(t, bin, addr, "--data", filepath.Join(t.TempDir(), "data"),
		"--webhook-secret-file", secrets, "--webhook-lowercase", "--webhook-repo-prefix", "github.com/")
	requireDashboard(t, base)

	ctx := newBrowser(t, browser)
	do(t, ctx, "open the page", chromedp.Navigate(base+"/?"+url.Values{"repo": {repo}}.Encode()))
	do(t, ctx, "wait until live", chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)))

	deliver := func(id string, body []byte) {
		t.Helper()
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/hooks/github", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", id)
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("delivery %s: %d %s", id, resp.StatusCode, b)
		}
	}
	deliver("72d3162e-cc78-11e3-81ab-4c9367dc0958", body)
	deliver("72d3162e-cc78-11e3-81ab-4c9367dc0958", body) // GitHub's redelivery
	// A marker push to another branch, delivered after both: once its row
	// shows, a duplicate of the first would already be on the page.
	marker := bytes.Replace(body, []byte(`"ref": "refs/heads/main"`), []byte(`"ref": "refs/heads/marker"`), 1)
	deliver("9a1e2c3d-cc78-11e3-81ab-4c9367dc0958", marker)
	do(t, ctx, "marker row", chromedp.WaitVisible(chromedp.CSS(`#feed li.entry[data-ref="refs/heads/marker"]`)))
	waitRow(t, ctx, after)
	do(t, ctx, "ref table shows the pushed commit",
		chromedp.WaitVisible(chromedp.CSS(`#repos tr[data-ref="refs/heads/main"][data-sha="`+after+`"]`)))
	row := evaluate[string](t, ctx, `document.querySelector('#feed li.entry[data-new="`+after+`"]').innerText`)
	if !strings.Contains(row, "Update README.md") {
		t.Errorf("the row lacks the forge's commit subject:\n%s", row)
	}
	if n := evaluate[int](t, ctx, `document.querySelectorAll('#feed li.entry[data-ref="refs/heads/main"][data-new="`+after+`"]').length`); n != 1 {
		t.Errorf("the push shows %d times, want once", n)
	}
}
