// Package web is refcast's dashboard: a single page, embedded in the binary,
// that shows the current refs of the chosen repos (from /v1/refs) and a live
// feed of their updates (from /v1/events over EventSource).
//
// It is not an API: the page talks to the node only through the public
// protocol (docs/protocol.md), holds no server-side state and needs no build
// step. The handler serves the page at "/" and its static files under
// "/assets/<version>/"; everything else is 404, so the node mounts it as a
// catch-all after its own routes.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"
)

//go:embed static
var staticFS embed.FS

// DefaultTitle is the page title when Options.Title is empty.
const DefaultTitle = "refcast"

// Options configure the dashboard. They are rendered into the page once, when
// the handler is built.
type Options struct {
	// Title is shown as the page title and heading; DefaultTitle when empty.
	Title string
	// CommitURL is a link template for commits, with {repo}, {sha} and {ref}
	// placeholders, e.g. "https://git.example.com/{repo}/commit/{sha}". Only
	// http and https URLs are accepted; anything else is dropped. A page URL
	// may override it with ?commit=. Empty means ids are not links.
	CommitURL string
}

// Cache lifetimes of the responses.
const (
	// immutableCache is for assets requested under the current version:
	// their URL changes whenever their content does.
	immutableCache = "public, max-age=31536000, immutable"
	// revalidateCache is for the page itself and for assets requested under
	// another version (a page from another build behind the same balancer):
	// usable, but checked again every time.
	revalidateCache = "no-cache"
)

// contentTypes maps the extensions the page uses to their types, set
// explicitly rather than from the system's MIME tables, which vary.
var contentTypes = map[string]string{
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".html": "text/html; charset=utf-8",
}

// csp allows only the page's own scripts, styles and connections: the page
// renders untrusted names, subjects and authors, so it must never run
// anything else even if an escaping bug slipped in.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type asset struct {
	body  []byte
	ctype string
	etag  string
}

type handler struct {
	version string            // hash of every asset, set at construction
	index   []byte            // rendered page, set at construction
	etag    string            // of index
	assets  map[string]*asset // by file name, set at construction
}

// Handler returns the dashboard's HTTP handler. It serves GET and HEAD of "/"
// (the page, rendered with opts) and "/assets/<version>/<file>", answers 404
// for any other path and 405 for other methods. It is safe for concurrent
// use and holds everything in memory (a few tens of kilobytes).
func Handler(opts Options) http.Handler {
	h, err := newHandler(opts)
	if err != nil {
		// The files are embedded and the template is fixed: an error is a
		// build defect caught by the package's tests.
		panic(err)
	}
	return h
}

func newHandler(opts Options) (*handler, error) {
	h := &handler{assets: make(map[string]*asset)}
	sum := sha256.New()
	entries, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("read embedded files: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var page []byte
	for _, e := range entries {
		name := e.Name()
		b, err := staticFS.ReadFile("static/" + name)
		if err != nil {
			return nil, fmt.Errorf("read embedded %s: %w", name, err)
		}
		if name == "index.html" {
			page = b
			continue
		}
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok {
			return nil, fmt.Errorf("embedded %s: no content type for its extension", name)
		}
		fmt.Fprintf(sum, "%s\x00%d\x00", name, len(b))
		sum.Write(b)
		h.assets[name] = &asset{body: b, ctype: ctype, etag: etagOf(b)}
	}
	if page == nil {
		return nil, fmt.Errorf("embedded index.html is missing")
	}
	h.version = hex.EncodeToString(sum.Sum(nil))[:12]

	tmpl, err := template.New("index").Parse(string(page))
	if err != nil {
		return nil, fmt.Errorf("parse index.html: %w", err)
	}
	title := strings.TrimSpace(opts.Title)
	if title == "" {
		title = DefaultTitle
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, struct {
		Title, CommitURL, Assets string
	}{title, safeCommitURL(opts.CommitURL), "assets/" + h.version + "/"})
	if err != nil {
		return nil, fmt.Errorf("render index.html: %w", err)
	}
	h.index = buf.Bytes()
	h.etag = etagOf(h.index)
	return h, nil
}

// safeCommitURL keeps a commit link template only when it is an absolute
// http(s) URL, so a misconfiguration cannot turn ids into script links.
func safeCommitURL(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	// Placeholders are not valid in every URL position; check a filled-in
	// sample instead of the template itself.
	sample := strings.NewReplacer("{repo}", "r", "{sha}", "0", "{ref}", "x").Replace(s)
	u, err := url.Parse(sample)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	return s
}

func etagOf(b []byte) string {
	s := sha256.Sum256(b)
	return `"` + hex.EncodeToString(s[:8]) + `"`
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	p := r.URL.Path
	if p == "/" || p == "/index.html" {
		hdr := w.Header()
		hdr.Set("Content-Type", contentTypes[".html"])
		hdr.Set("Cache-Control", revalidateCache)
		hdr.Set("Content-Security-Policy", csp)
		// The page URL may carry ?token=: never send it to commit links.
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("X-Frame-Options", "DENY")
		serve(w, r, h.index, h.etag)
		return
	}
	version, name, ok := strings.Cut(strings.TrimPrefix(p, "/assets/"), "/")
	a := h.assets[name]
	if !strings.HasPrefix(p, "/assets/") || !ok || a == nil || version == "" {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", a.ctype)
	if version == h.version {
		hdr.Set("Cache-Control", immutableCache)
	} else {
		hdr.Set("Cache-Control", revalidateCache)
	}
	serve(w, r, a.body, a.etag)
}

func serve(w http.ResponseWriter, r *http.Request, body []byte, etag string) {
	hdr := w.Header()
	hdr.Set("ETag", etag)
	hdr.Set("X-Content-Type-Options", "nosniff")
	// ServeContent answers If-None-Match, ranges and HEAD; the zero time
	// leaves Last-Modified out.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// writeError answers with the protocol's JSON error body.
func writeError(w http.ResponseWriter, status int, msg string) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"error\":%q,\"status\":%d}\n", msg, status)
}
