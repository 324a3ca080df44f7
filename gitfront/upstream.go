package gitfront

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// upstream is the real git server fetches go to: a local repository path
// or an http(s) URL, from a template with {repo}.
type upstream struct {
	template string
	local    bool
	git      string       // git binary, for local
	client   *http.Client // for http(s)
}

// parseUpstream reads a --git-upstream template: an http(s) URL such as
// "https://git.example.com/{repo}.git" or an absolute path such as
// "/srv/git/{repo}.git", with {repo} at least once.
func parseUpstream(template string) (*upstream, error) {
	if !strings.Contains(template, "{repo}") {
		return nil, fmt.Errorf("git upstream %q: the template must contain {repo}, as in /srv/git/{repo}.git or https://git.example.com/{repo}.git", template)
	}
	sample := strings.ReplaceAll(template, "{repo}", "acme/app")
	if strings.HasPrefix(template, "http://") || strings.HasPrefix(template, "https://") {
		u, err := url.Parse(sample)
		if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("git upstream %q: not a usable URL (a host, no query, fragment or credentials)", template)
		}
		return &upstream{template: strings.TrimSuffix(template, "/")}, nil
	}
	if !filepath.IsAbs(sample) {
		return nil, fmt.Errorf("git upstream %q: must be an http(s) URL or an absolute path", template)
	}
	return &upstream{template: template, local: true}, nil
}

func (u *upstream) where(repo string) string { return strings.ReplaceAll(u.template, "{repo}", repo) }

// maxGitProtocolLen bounds what passes of a client's Git-Protocol header
// ("version=2" and the like are a few bytes).
const maxGitProtocolLen = 256

// gitProtocolValue reports whether a client's Git-Protocol header may pass
// to the upstream (GIT_PROTOCOL for a local one): key=value pairs in a
// safe charset, bounded. Hand-written rather than a regexp: the one it
// replaces, `^[A-Za-z0-9=:._-]{1,256}$`, expanded its bound into 256
// states at package init, 4 ms and 276 KB of every process start of the
// binary, git hooks included.
func gitProtocolValue(s string) bool {
	if s == "" || len(s) > maxGitProtocolLen {
		return false
	}
	for i := range len(s) {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '=', c == ':', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// proxy streams one request to the upstream and its answer back. body is
// the request body (nil for discovery, advertise true). Nothing is
// buffered whole: both directions are copied as they come, and the
// answer is flushed after every write so git sees progress.
func (h *Handler) proxy(w http.ResponseWriter, r *http.Request, repo string, body io.Reader, advertise bool) error {
	u := h.upstream
	if u == nil {
		return fail(http.StatusNotImplemented, "this refcast node serves ref discovery only: fetch from the git server itself (the node runs without --git-upstream)")
	}
	h.opts.Metrics.Upstream()
	proto := r.Header.Get("Git-Protocol")
	if !gitProtocolValue(proto) {
		proto = ""
	}
	if u.local {
		return h.proxyLocal(w, r, u.where(repo), proto, body, advertise)
	}
	return h.proxyHTTP(w, r, u.where(repo), proto, body, advertise)
}

func (h *Handler) proxyLocal(w http.ResponseWriter, r *http.Request, dir, proto string, body io.Reader, advertise bool) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fail(http.StatusNotFound, "repository not found")
	}
	args := []string{"upload-pack", "--stateless-rpc"}
	if advertise {
		args = append(args, "--advertise-refs")
	}
	cmd := exec.CommandContext(r.Context(), h.upstream.git, append(args, "--", dir)...)
	cmd.Env = append(os.Environ(), "GIT_PROTOCOL="+proto)
	// A client gone: the process is killed; Wait then gives the copying
	// goroutines 5 s to notice before it returns anyway.
	cmd.WaitDelay = 5 * time.Second
	if body != nil {
		cmd.Stdin = body
	}
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4096}
	hd := w.Header()
	noCache(hd)
	fw := &flushWriter{w: w, rc: http.NewResponseController(w)}
	if advertise {
		hd.Set("Content-Type", typeAdvertisement)
		if proto == "" || !strings.Contains(proto, "version=2") {
			// http-backend's preamble, which upload-pack itself does not write.
			fw.Write(append(AppendPkt(nil, serviceHdr), flushPkt...))
		}
	} else {
		hd.Set("Content-Type", typeResult)
	}
	cmd.Stdout = fw
	err := cmd.Run()
	if err != nil && r.Context().Err() == nil {
		h.opts.Logger.Warn("git upload-pack failed", "dir", dir, "err", err, "stderr", stderr.String())
		if !fw.wrote {
			return fail(http.StatusInternalServerError, "the git server failed")
		}
	}
	return nil
}

// proxyHTTP forwards to an http(s) upstream, passing the client's
// Authorization so the git server decides who may fetch.
func (h *Handler) proxyHTTP(w http.ResponseWriter, r *http.Request, base, proto string, body io.Reader, advertise bool) error {
	method, target := http.MethodPost, base+"/git-upload-pack"
	if advertise {
		method, target = http.MethodGet, base+"/info/refs?service=git-upload-pack"
	}
	req, err := http.NewRequestWithContext(r.Context(), method, target, body)
	if err != nil {
		return fmt.Errorf("upstream request: %w", err)
	}
	for _, k := range []string{"Authorization", "Accept", "User-Agent"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	if proto != "" {
		req.Header.Set("Git-Protocol", proto)
	}
	if !advertise {
		req.Header.Set("Content-Type", typeRequest)
		// The body is the client's, byte for byte, unless it was gzip:
		// keep its length so upstreams that refuse chunked bodies (CGI)
		// still take it.
		if enc := r.Header.Get("Content-Encoding"); (enc == "" || enc == "identity") && r.ContentLength > 0 {
			req.ContentLength = r.ContentLength
		}
	}
	resp, err := h.upstream.client.Do(req)
	if err != nil {
		if r.Context().Err() != nil {
			return nil
		}
		h.opts.Logger.Warn("git upstream unreachable", "url", target, "err", err)
		return fail(http.StatusBadGateway, "the git server could not be reached")
	}
	defer resp.Body.Close()
	hd := w.Header()
	for _, k := range []string{"Content-Type", "Cache-Control", "Expires", "Pragma", "WWW-Authenticate"} {
		if v := resp.Header.Get(k); v != "" {
			hd.Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	fw := &flushWriter{w: w, rc: http.NewResponseController(w)}
	if _, err := io.Copy(fw, resp.Body); err != nil && r.Context().Err() == nil && !errors.Is(err, io.EOF) {
		h.opts.Logger.Warn("git upstream answer cut", "url", target, "err", err)
	}
	return nil
}

// flushWriter flushes after every write, so a streamed answer (git's
// progress, a pack) reaches the client as it is produced.
type flushWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.wrote = true
	n, err := f.w.Write(p)
	if err == nil {
		_ = f.rc.Flush()
	}
	return n, err
}

// limitedWriter keeps the first n bytes (git's stderr, for the log).
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// ValidateUpstream checks a --git-upstream template without building a
// handler, for flag parsing: the error says what a valid one looks like.
func ValidateUpstream(template string) error {
	_, err := parseUpstream(template)
	return err
}
