package gitfront

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
)

func id(c byte) string { return strings.Repeat(string(c), 40) }

// newTestHandler serves a memory bus holding acme/app (complete: HEAD on
// dev, a lightweight and an annotated tag) and acme/old (no HEAD known).
func newTestHandler(t *testing.T, opts Options) *httptest.Server {
	t.Helper()
	b, err := memory.New(memory.Options{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	now := time.Now()
	seed := &bus.Push{ID: "s1", Repo: "acme/app", Time: now, Seed: true, Head: "refs/heads/dev", Updates: []bus.RefUpdate{
		{Ref: "refs/heads/main", New: id('a')},
		{Ref: "refs/heads/dev", New: id('b')},
		{Ref: "refs/tags/light", New: id('a')},
		{Ref: "refs/tags/v1", New: id('c'), Peeled: id('a')},
	}}
	old := &bus.Push{ID: "s2", Repo: "acme/old", Time: now, Seed: true, Updates: []bus.RefUpdate{{Ref: "refs/heads/main", New: id('a')}}}
	for _, p := range []*bus.Push{seed, old} {
		if _, err := b.Publish(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	opts.State = b
	opts.Agent = "refcast/test"
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func pkts(lines ...string) string {
	var b []byte
	for _, l := range lines {
		switch l {
		case "0000", "0001":
			b = append(b, l...)
		default:
			b = AppendPkt(b, l)
		}
	}
	return string(b)
}

func TestDiscoveryV0(t *testing.T) {
	t.Parallel()
	srv := newTestHandler(t, Options{})
	for _, path := range []string{"/git/acme/app.git/info/refs", "/git/acme/app/info/refs"} {
		res, body := do(t, "GET", srv.URL+path+"?service=git-upload-pack", "")
		caps := v0Caps + " symref=HEAD:refs/heads/dev object-format=sha1 agent=refcast/test"
		want := pkts("# service=git-upload-pack\n", "0000",
			id('b')+" HEAD\x00"+caps+"\n",
			id('b')+" refs/heads/dev\n",
			id('a')+" refs/heads/main\n",
			id('a')+" refs/tags/light\n",
			id('c')+" refs/tags/v1\n",
			id('a')+" refs/tags/v1^{}\n", "0000")
		if res.StatusCode != 200 || body != want {
			t.Fatalf("%s: %d\n%q\nwant\n%q", path, res.StatusCode, body, want)
		}
		if ct, cc := res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"); ct != typeAdvertisement || !strings.Contains(cc, "no-cache") || res.Header.Get("ETag") == "" {
			t.Errorf("headers: %v", res.Header)
		}
		res, _ = do(t, "GET", srv.URL+path+"?service=git-upload-pack", "", "If-None-Match", res.Header.Get("ETag"))
		if res.StatusCode != http.StatusNotModified {
			t.Errorf("revalidation: %d, want 304", res.StatusCode)
		}
	}
}

func TestLsRefsV2(t *testing.T) {
	t.Parallel()
	srv := newTestHandler(t, Options{})
	res, body := do(t, "GET", srv.URL+"/git/acme/app.git/info/refs?service=git-upload-pack", "", "Git-Protocol", "version=2")
	if res.StatusCode != 200 || !strings.HasPrefix(body, pkts("version 2\n")) || !strings.Contains(body, "ls-refs=unborn") {
		t.Fatalf("caps: %d %q", res.StatusCode, body)
	}
	post := func(req string) (*http.Response, string) {
		return do(t, "POST", srv.URL+"/git/acme/app.git/git-upload-pack", req, "Git-Protocol", "version=2", "Content-Type", typeRequest)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"all", []string{"symrefs", "peel"}, []string{id('b') + " HEAD symref-target:refs/heads/dev\n", id('b') + " refs/heads/dev\n", id('a') + " refs/heads/main\n", id('a') + " refs/tags/light\n", id('c') + " refs/tags/v1 peeled:" + id('a') + "\n"}},
		{"heads only", []string{"ref-prefix refs/heads/"}, []string{id('b') + " refs/heads/dev\n", id('a') + " refs/heads/main\n"}},
		{"tags unpeeled", []string{"ref-prefix refs/tags/"}, []string{id('a') + " refs/tags/light\n", id('c') + " refs/tags/v1\n"}},
		{"HEAD and main", []string{"ref-prefix HEAD", "ref-prefix refs/heads/main"}, []string{id('b') + " HEAD\n", id('a') + " refs/heads/main\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := pkts(append(append([]string{"command=ls-refs\n", "agent=git/2\n", "object-format=sha1\n", "0001"}, tc.args...), "0000")...)
			res, body := post(req)
			if want := pkts(append(tc.want, "0000")...); res.StatusCode != 200 || body != want {
				t.Fatalf("%d\n%q\nwant\n%q", res.StatusCode, body, want)
			}
			if res.Header.Get("Content-Type") != typeResult {
				t.Errorf("Content-Type %q", res.Header.Get("Content-Type"))
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	srv := newTestHandler(t, Options{})
	v2 := []string{"Git-Protocol", "version=2", "Content-Type", typeRequest}
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
	}{
		{"unknown repo", "GET", "/git/acme/none.git/info/refs?service=git-upload-pack", "", nil, 404},
		{"traversal", "GET", "/git/acme/../etc.git/info/refs?service=git-upload-pack", "", nil, 400},
		{"encoded traversal", "GET", "/git/acme/%2e%2e/x/info/refs?service=git-upload-pack", "", nil, 400},
		{"not an endpoint", "GET", "/git/acme/app.git/objects/info/packs", "", nil, 404},
		{"dumb http", "GET", "/git/acme/app.git/info/refs", "", nil, 403},
		{"push discovery", "GET", "/git/acme/app.git/info/refs?service=git-receive-pack", "", nil, 403},
		{"push", "POST", "/git/acme/app.git/git-receive-pack", "0000", nil, 403},
		{"incomplete state, no upstream", "GET", "/git/acme/old.git/info/refs?service=git-upload-pack", "", nil, 503},
		{"wrong content type", "POST", "/git/acme/app.git/git-upload-pack", "0000", []string{"Content-Type", "text/plain"}, 415},
		{"malformed pkt-line", "POST", "/git/acme/app.git/git-upload-pack", "00zzcommand=ls-refs", v2, 400},
		{"oversized pkt-line", "POST", "/git/acme/app.git/git-upload-pack", "ffff" + strings.Repeat("x", 70000), v2, 400},
		{"truncated", "POST", "/git/acme/app.git/git-upload-pack", pkts("command=ls-refs\n"), v2, 400},
		{"unknown command", "POST", "/git/acme/app.git/git-upload-pack", pkts("command=rm-rf\n", "0000"), v2, 400},
		{"unknown argument", "POST", "/git/acme/app.git/git-upload-pack", pkts("command=ls-refs\n", "0001", "frobnicate\n", "0000"), v2, 400},
		{"too large", "POST", "/git/acme/app.git/git-upload-pack", pkts("command=ls-refs\n", "0001") + strings.Repeat(pkts("ref-prefix "+strings.Repeat("r", 60000)+"\n"), 20), v2, 413},
		{"fetch without upstream", "POST", "/git/acme/app.git/git-upload-pack", pkts("command=fetch\n", "0000"), v2, 501},
		{"v0 fetch without upstream", "POST", "/git/acme/app.git/git-upload-pack", "0000", []string{"Content-Type", typeRequest}, 501},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, body := do(t, tc.method, srv.URL+tc.path, tc.body, tc.hdr...)
			if res.StatusCode != tc.status || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") || body == "" {
				t.Fatalf("%d %q (%s), want %d with a text message", res.StatusCode, body, res.Header.Get("Content-Type"), tc.status)
			}
		})
	}
}

func TestAccess(t *testing.T) {
	t.Parallel()
	srv := newTestHandler(t, Options{Access: func(r *http.Request, repo string) (func(string) bool, error) {
		switch _, pw, _ := r.BasicAuth(); pw {
		case "":
			return nil, ErrUnauthorized
		case "heads":
			return func(ref string) bool { return strings.HasPrefix(ref, "refs/heads/") }, nil
		case "all":
			return nil, nil
		}
		return nil, ErrForbidden
	}})
	url := srv.URL + "/git/acme/app.git/info/refs?service=git-upload-pack"
	res, _ := do(t, "GET", url, "")
	if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != `Basic realm="refcast"` {
		t.Fatalf("anonymous: %d %v", res.StatusCode, res.Header)
	}
	res, _ = do(t, "GET", strings.Replace(url, "://", "://u:nope@", 1), "")
	if res.StatusCode != 403 {
		t.Fatalf("wrong token: %d", res.StatusCode)
	}
	_, body := do(t, "GET", strings.Replace(url, "://", "://u:heads@", 1), "")
	if strings.Contains(body, "refs/tags/") || !strings.Contains(body, "refs/heads/main") {
		t.Fatalf("heads-only token sees %q", body)
	}
}

func TestParseUpstream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tmpl string
		ok   bool
	}{
		{"/srv/git/{repo}.git", true},
		{"https://git.example.com/{repo}.git", true},
		{"http://git:8080/r/{repo}", true},
		{"/srv/git/app.git", false},
		{"srv/{repo}", false},
		{"https://user:pw@git/{repo}", false},
		{"https:///{repo}", false},
		{"https://git/{repo}?x=1", false},
	} {
		if err := ValidateUpstream(tc.tmpl); (err == nil) != tc.ok {
			t.Errorf("%q: err = %v, want ok %v", tc.tmpl, err, tc.ok)
		}
	}
}
