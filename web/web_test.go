package web

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var assetRef = regexp.MustCompile(`(?:src|href)="(assets/[0-9a-f]{12}/[a-z]+\.[a-z]+)"`)

func TestIndex(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		want    []string // substrings of the page
		notWant []string
	}{
		{
			name: "defaults",
			want: []string{"<title>refcast</title>", `data-title="refcast"`, `data-commit-template=""`},
		},
		{
			name: "title and commit template",
			opts: Options{Title: "Acme refs", CommitURL: "https://git.example.com/{repo}/commit/{sha}"},
			want: []string{"<title>Acme refs</title>", `data-commit-template="https://git.example.com/{repo}/commit/{sha}"`},
		},
		{
			name:    "title is escaped",
			opts:    Options{Title: `<script>alert("x")</script> & co`},
			want:    []string{"<title>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co</title>"},
			notWant: []string{"<script>alert"},
		},
		{
			name:    "commit template is escaped in its attribute",
			opts:    Options{CommitURL: `https://git.example.com/{repo}/commit/{sha}?a="><b>`},
			want:    []string{`data-commit-template="https://git.example.com/{repo}/commit/{sha}?a=&#34;&gt;&lt;b&gt;"`},
			notWant: []string{`"><b>`},
		},
		{
			name:    "script commit template is dropped",
			opts:    Options{CommitURL: "javascript:alert(1)//{sha}"},
			want:    []string{`data-commit-template=""`},
			notWant: []string{"javascript:"},
		},
		{
			name:    "relative commit template is dropped",
			opts:    Options{CommitURL: "/{repo}/commit/{sha}"},
			want:    []string{`data-commit-template=""`},
			notWant: []string{"/commit/"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Handler(tt.opts)
			for _, path := range []string{"/", "/index.html"} {
				res := get(t, h, http.MethodGet, path, nil)
				if res.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: status %d", path, res.StatusCode)
				}
				if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("GET %s: Content-Type %q", path, ct)
				}
				if cc := res.Header.Get("Cache-Control"); cc != "no-cache" {
					t.Errorf("GET %s: Cache-Control %q, want no-cache", path, cc)
				}
				for _, k := range []string{"Content-Security-Policy", "ETag", "Referrer-Policy"} {
					if res.Header.Get(k) == "" {
						t.Errorf("GET %s: no %s header", path, k)
					}
				}
				page := body(t, res)
				for _, s := range tt.want {
					if !strings.Contains(page, s) {
						t.Errorf("GET %s: page lacks %q", path, s)
					}
				}
				for _, s := range tt.notWant {
					if strings.Contains(page, s) {
						t.Errorf("GET %s: page contains %q", path, s)
					}
				}
			}
		})
	}
}

func TestAssets(t *testing.T) {
	h := Handler(Options{})
	page := body(t, get(t, h, http.MethodGet, "/", nil))
	refs := assetRef.FindAllStringSubmatch(page, -1)
	if len(refs) != 3 {
		t.Fatalf("page references %d assets, want 3 (icon, style, script): %v", len(refs), refs)
	}
	wantType := map[string]string{
		".js":  "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8",
		".svg": "image/svg+xml",
	}
	for _, m := range refs {
		path := "/" + m[1]
		t.Run(path, func(t *testing.T) {
			res := get(t, h, http.MethodGet, path, nil)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			ext := path[strings.LastIndex(path, "."):]
			if ct := res.Header.Get("Content-Type"); ct != wantType[ext] {
				t.Errorf("Content-Type %q, want %q", ct, wantType[ext])
			}
			if cc := res.Header.Get("Cache-Control"); cc != immutableCache {
				t.Errorf("Cache-Control %q, want %q", cc, immutableCache)
			}
			if res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("no X-Content-Type-Options: nosniff")
			}
			if len(body(t, res)) == 0 {
				t.Error("empty body")
			}
			etag := res.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			res = get(t, h, http.MethodGet, path, map[string]string{"If-None-Match": etag})
			if res.StatusCode != http.StatusNotModified {
				t.Errorf("If-None-Match: status %d, want 304", res.StatusCode)
			}

			// A page from another build asks for another version: it gets
			// this build's file, revalidated rather than cached for a year.
			other := "/assets/000000000000/" + path[strings.LastIndex(path, "/")+1:]
			res = get(t, h, http.MethodGet, other, nil)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("other version: status %d", res.StatusCode)
			}
			if cc := res.Header.Get("Cache-Control"); cc != revalidateCache {
				t.Errorf("other version: Cache-Control %q, want %q", cc, revalidateCache)
			}
		})
	}
}

func TestVersionChangesWithContent(t *testing.T) {
	a, err := newHandler(Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := newHandler(Options{Title: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if a.version != b.version {
		t.Errorf("asset version depends on options: %s vs %s", a.version, b.version)
	}
	if a.etag == b.etag {
		t.Error("pages with different titles share an ETag")
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	h := Handler(Options{})
	page := body(t, get(t, h, http.MethodGet, "/", nil))
	version := assetRef.FindStringSubmatch(page)[1][len("assets/"):][:12]
	tests := []struct {
		name   string
		method string
		path   string
		status int
	}{
		{"unknown path", http.MethodGet, "/nope", http.StatusNotFound},
		{"unknown asset", http.MethodGet, "/assets/" + version + "/nope.js", http.StatusNotFound},
		{"template source is not an asset", http.MethodGet, "/assets/" + version + "/index.html", http.StatusNotFound},
		{"assets without version", http.MethodGet, "/assets/app.js", http.StatusNotFound},
		{"assets directory", http.MethodGet, "/assets/" + version + "/", http.StatusNotFound},
		{"empty version", http.MethodGet, "/assets//app.js", http.StatusNotFound},
		{"traversal", http.MethodGet, "/assets/" + version + "/../web.go", http.StatusNotFound},
		{"nested", http.MethodGet, "/assets/" + version + "/static/app.js", http.StatusNotFound},
		{"static dir", http.MethodGet, "/static/app.js", http.StatusNotFound},
		{"api path", http.MethodGet, "/v1/nope", http.StatusNotFound},
		{"post", http.MethodPost, "/", http.StatusMethodNotAllowed},
		{"delete asset", http.MethodDelete, "/assets/" + version + "/app.js", http.StatusMethodNotAllowed},
		{"head index", http.MethodHead, "/", http.StatusOK},
		{"head asset", http.MethodHead, "/assets/" + version + "/app.js", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := get(t, h, tt.method, tt.path, nil)
			if res.StatusCode != tt.status {
				t.Fatalf("%s %s: status %d, want %d", tt.method, tt.path, res.StatusCode, tt.status)
			}
			b := body(t, res)
			switch {
			case tt.status >= 400:
				if ct := res.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("error Content-Type %q", ct)
				}
				want := fmt.Sprintf(`"status":%d`, tt.status)
				if !strings.Contains(b, `"error":`) || !strings.Contains(b, want) {
					t.Errorf("error body %q", b)
				}
				if tt.status == http.StatusMethodNotAllowed && res.Header.Get("Allow") != "GET, HEAD" {
					t.Errorf("Allow %q", res.Header.Get("Allow"))
				}
			case tt.method == http.MethodHead:
				if b != "" {
					t.Errorf("HEAD has a body of %d bytes", len(b))
				}
				if res.Header.Get("Content-Length") == "" {
					t.Error("HEAD without Content-Length")
				}
			}
		})
	}
}

func TestSafeCommitURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"https://git.example.com/{repo}/commit/{sha}", "https://git.example.com/{repo}/commit/{sha}"},
		{" http://h/{repo}/-/commit/{sha}?ref={ref} ", "http://h/{repo}/-/commit/{sha}?ref={ref}"},
		{"javascript:alert(1)", ""},
		{"data:text/html,hi", ""},
		{"//evil.example/{sha}", ""},
		{"/{repo}/commit/{sha}", ""},
		{"https:///{sha}", ""},
		{"ftp://h/{sha}", ""},
	}
	for _, tt := range tests {
		if got := safeCommitURL(tt.in); got != tt.want {
			t.Errorf("safeCommitURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
