package gitfront

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/refcast/refcast/bus"
)

// Prefix is where the endpoints live, so they never collide with the
// dashboard or the /v1/ API.
const Prefix = "/git/"

// Content types and cache headers, as git http-backend sends them.
const (
	typeAdvertisement = "application/x-git-upload-pack-advertisement"
	typeRequest       = "application/x-git-upload-pack-request"
	typeResult        = "application/x-git-upload-pack-result"
)

// Request kinds, the label of the node's refcast_git_requests_total.
const (
	KindDiscovery         = "discovery"          // info/refs answered from the state
	KindDiscoveryUpstream = "discovery-upstream" // info/refs proxied: no complete state
	KindLsRefs            = "ls-refs"            // v2 ls-refs answered from the state
	KindFetch             = "fetch"              // proxied to the upstream (v2 fetch, v0 POST, ls-refs of an incomplete state)
	KindRefused           = "refused"            // push, dumb HTTP, bad requests
)

// Defaults for Options.
const (
	// DefaultMaxCommand bounds an ls-refs request refcast reads whole: git
	// sends one ref-prefix per pattern and rev-parse rule (six per
	// pattern), so even `git fetch` of a thousand refs stays far below
	// 1 MiB.
	DefaultMaxCommand = 1 << 20
	// DefaultCacheRefs holds the largest seed (bus.MaxRefsPerSeed,
	// 200,000), or two 100,000-ref repos and thousands of small ones. A cached ref costs
	// about 120 bytes (a name, an id, a slice entry) and, once a client
	// that sees every ref has asked for the v0 advertisement, about 90
	// more for its line in it: 50 MB at most.
	DefaultCacheRefs = 250000
	// DefaultAgent is the agent= capability when the node gives none.
	DefaultAgent = "refcast/dev"
)

// Errors the Access check returns, wrapped with a message for the client.
var (
	// ErrUnauthorized: a credential is required (401, so git prompts).
	ErrUnauthorized = errors.New("authentication required")
	// ErrForbidden: the credential does not cover this repo (403).
	ErrForbidden = errors.New("forbidden")
)

// StateReader is the part of the bus this package reads.
type StateReader interface {
	Refs(ctx context.Context, repo string) (bus.RefState, error)
}

// Metrics counts requests; the node backs it with Prometheus counters.
// Implementations must be safe for concurrent use.
type Metrics interface {
	Request(kind string)
	Upstream()
}

// Options configure a Handler.
type Options struct {
	State StateReader // required
	// Upstream is the git server template (see parseUpstream); "" serves
	// discovery only and answers fetches 501.
	Upstream string
	// Git is the git binary a local upstream runs; "git" when empty.
	Git string
	// Agent is the agent= capability ("refcast/1.4.0").
	Agent string
	// Features are the upstream's optional capabilities to advertise
	// (keys of Features: "filter" for partial clones, ...). Only with an
	// Upstream.
	Features []string
	// Access checks a request's credential for repo and returns which refs
	// it may see (nil: all). Errors wrapping ErrUnauthorized or
	// ErrForbidden are shown to the client; nil Access reads anonymously.
	Access     func(r *http.Request, repo string) (visible func(ref string) bool, err error)
	Metrics    Metrics      // may be nil
	Logger     *slog.Logger // slog.Default() when nil
	MaxCommand int64        // DefaultMaxCommand when 0
	// CacheRefs bounds the refs kept in sorted snapshots of recently
	// advertised repos, all repos together, when State can also report
	// partition heads (HeadReader); DefaultCacheRefs when 0, negative
	// turns the cache off.
	CacheRefs int
	// Client is the HTTP client of an http upstream; one without an
	// overall timeout (a fetch streams for as long as it takes) when nil.
	Client *http.Client
}

// Handler serves Prefix. Safe for concurrent use.
type Handler struct {
	opts     Options
	caps     *caps
	upstream *upstream  // nil without one
	cache    *snapCache // nil without one: every request reads the state
}

// New validates options (the upstream template above all) and returns
// the handler.
func New(opts Options) (*Handler, error) {
	if opts.State == nil {
		return nil, errors.New("gitfront: a state reader is required")
	}
	if opts.Agent == "" {
		opts.Agent = DefaultAgent
	}
	if strings.ContainsAny(opts.Agent, " \n\x00") {
		return nil, fmt.Errorf("gitfront: agent %q contains a space or control character", opts.Agent)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxCommand <= 0 {
		opts.MaxCommand = DefaultMaxCommand
	}
	if opts.Metrics == nil {
		opts.Metrics = nopMetrics{}
	}
	c, err := newCaps(opts.Agent, opts.Features)
	if err != nil {
		return nil, fmt.Errorf("gitfront: %w", err)
	}
	if len(opts.Features) > 0 && opts.Upstream == "" {
		return nil, errors.New("gitfront: upstream features without an upstream: fetches are not served, so there is nothing to advertise them for")
	}
	h := &Handler{opts: opts, caps: c}
	if hr, ok := opts.State.(HeadReader); ok && opts.CacheRefs >= 0 {
		if opts.CacheRefs == 0 {
			opts.CacheRefs = DefaultCacheRefs
		}
		h.cache = newSnapCache(hr, opts.CacheRefs)
	}
	if opts.Upstream != "" {
		u, err := parseUpstream(opts.Upstream)
		if err != nil {
			return nil, err
		}
		u.git, u.client = opts.Git, opts.Client
		if u.git == "" {
			u.git = "git"
		}
		if u.client == nil {
			u.client = &http.Client{Transport: http.DefaultTransport}
		}
		h.upstream = u
	}
	return h, nil
}

type nopMetrics struct{}

func (nopMetrics) Request(string) {}
func (nopMetrics) Upstream()      {}

// httpError is a failure with the status and text a git client sees (git
// prints a text/plain body after "remote: ").
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP implements http.Handler for every path under Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.serve(w, r); err != nil {
		h.writeError(w, r, err)
	}
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) error {
	path, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		return fail(http.StatusNotFound, "not a git endpoint")
	}
	repoPart, endpoint := splitEndpoint(path)
	if endpoint == "" {
		return fail(http.StatusNotFound, "not a git endpoint: refcast serves /git/REPO.git/info/refs and /git/REPO.git/git-upload-pack")
	}
	repo := strings.TrimSuffix(repoPart, ".git")
	if err := bus.ValidateRepo(repo); err != nil {
		h.opts.Metrics.Request(KindRefused)
		return fail(http.StatusBadRequest, "%v", err)
	}
	switch endpoint {
	case "info/refs":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return fail(http.StatusMethodNotAllowed, "info/refs takes GET")
		}
		switch svc := r.URL.Query().Get("service"); svc {
		case "git-upload-pack":
			return h.discovery(w, r, repo)
		case "git-receive-pack":
			return h.refusePush()
		case "":
			h.opts.Metrics.Request(KindRefused)
			return fail(http.StatusForbidden, "refcast serves git's smart HTTP protocol only (git 1.6.6 or later)")
		default:
			h.opts.Metrics.Request(KindRefused)
			return fail(http.StatusForbidden, "unknown service %q", bus.Clip(svc, 40))
		}
	case "git-upload-pack":
		if r.Method != http.MethodPost {
			return fail(http.StatusMethodNotAllowed, "git-upload-pack takes POST")
		}
		return h.uploadPack(w, r, repo)
	default: // git-receive-pack
		return h.refusePush()
	}
}

// splitEndpoint cuts "acme/app.git/info/refs" into the repo part and the
// endpoint.
func splitEndpoint(path string) (repo, endpoint string) {
	for _, e := range []string{"info/refs", "git-upload-pack", "git-receive-pack"} {
		if rest, ok := strings.CutSuffix(path, "/"+e); ok {
			return rest, e
		}
	}
	return path, ""
}

func (h *Handler) refusePush() error {
	h.opts.Metrics.Request(KindRefused)
	return fail(http.StatusForbidden, "refcast serves fetches only: push to the git server itself")
}

// access runs the credential check.
func (h *Handler) access(r *http.Request, repo string) (func(string) bool, error) {
	if h.opts.Access == nil {
		return nil, nil
	}
	visible, err := h.opts.Access(r, repo)
	switch {
	case err == nil:
		return visible, nil
	case errors.Is(err, ErrUnauthorized):
		return nil, &httpError{status: http.StatusUnauthorized, msg: err.Error()}
	case errors.Is(err, ErrForbidden):
		return nil, &httpError{status: http.StatusForbidden, msg: err.Error()}
	}
	return nil, fmt.Errorf("check access to %s: %w", repo, err)
}

// state reads the repo's state: ok false when it cannot be advertised
// (unknown repo, or not complete).
func (h *Handler) state(ctx context.Context, repo string) (*snapshot, bool, error) {
	st, err := h.cache.get(ctx, h.opts.State, repo)
	if err != nil {
		return nil, false, fmt.Errorf("read refs of %s: %w", repo, err)
	}
	return st, st.servable(), nil
}

// notServable is the answer for a repo with no complete state and no
// upstream to ask.
func notServable(st *snapshot) error {
	if len(st.refs) == 0 {
		return fail(http.StatusNotFound, "repository not found")
	}
	return fail(http.StatusServiceUnavailable, "refcast does not know this repository's HEAD and tags yet: run `refcast sync` on it (or push to it with the current hook)")
}

// discovery answers GET info/refs?service=git-upload-pack.
func (h *Handler) discovery(w http.ResponseWriter, r *http.Request, repo string) error {
	visible, err := h.access(r, repo)
	if err != nil {
		return err
	}
	st, ok, err := h.state(r.Context(), repo)
	if err != nil {
		return err
	}
	v2 := wantsV2(r)
	if !ok {
		if h.upstream == nil {
			return notServable(st)
		}
		h.opts.Metrics.Request(KindDiscoveryUpstream)
		return h.proxy(w, r, repo, nil, true)
	}
	h.opts.Metrics.Request(KindDiscovery)
	var body []byte
	etag := ""
	switch {
	case v2: // capabilities only: no ref is listed
		body = appendV2Caps(nil, h.caps, st.format(visible))
	case visible == nil:
		body, etag = st.v0All(h.caps)
	default:
		body = st.view(visible, nil).appendV0(nil, h.caps)
	}
	if etag == "" {
		etag = etagOf(body)
	}
	hd := w.Header()
	noCache(hd)
	hd.Set("Content-Type", typeAdvertisement)
	hd.Set("Vary", "Authorization, Git-Protocol")
	hd.Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return nil
	}
	_, _ = w.Write(body)
	return nil
}

// crcTable is built on first use, not at package init: building it (32 KB
// of tables, ~0.2 ms) would otherwise be paid by every process of the one
// binary, each git hook run included (GODEBUG=inittrace=1 refcast version).
var crcTable = sync.OnceValue(func() *crc64.Table { return crc64.MakeTable(crc64.ECMA) })

// etagOf is the ETag of an advertisement, a checksum of it: equal bodies,
// equal tags, on every node, whatever else moved in the repo's partition.
func etagOf(body []byte) string {
	return `"` + strconv.FormatUint(crc64.Checksum(body, crcTable()), 16) + "-" + strconv.Itoa(len(body)) + `"`
}

// noCache sets the headers git http-backend sends on every dynamic answer.
func noCache(h http.Header) {
	h.Set("Expires", "Fri, 01 Jan 1980 00:00:00 GMT")
	h.Set("Pragma", "no-cache")
	h.Set("Cache-Control", "no-cache, max-age=0, must-revalidate")
}

// wantsV2 reports whether the client asked for protocol v2 (the
// Git-Protocol header holds colon-separated key=value pairs).
func wantsV2(r *http.Request) bool {
	for kv := range strings.SplitSeq(r.Header.Get("Git-Protocol"), ":") {
		if kv == "version=2" {
			return true
		}
	}
	return false
}

// uploadPack answers POST git-upload-pack: ls-refs from the state, the
// rest proxied.
func (h *Handler) uploadPack(w http.ResponseWriter, r *http.Request, repo string) error {
	if ct := r.Header.Get("Content-Type"); ct != typeRequest {
		h.opts.Metrics.Request(KindRefused)
		return fail(http.StatusUnsupportedMediaType, "Content-Type must be %s", typeRequest)
	}
	visible, err := h.access(r, repo)
	if err != nil {
		return err
	}
	body := io.Reader(r.Body)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return fail(http.StatusBadRequest, "request body is not gzip: %v", err)
		}
		defer zr.Close()
		body = zr
	default:
		return fail(http.StatusUnsupportedMediaType, "Content-Encoding %q is not supported (gzip is)", bus.Clip(enc, 40))
	}
	if !wantsV2(r) {
		h.opts.Metrics.Request(KindFetch)
		return h.proxy(w, r, repo, body, false)
	}
	// Read the command; keep every byte read so a proxied request is
	// replayed whole.
	var seen bytes.Buffer
	limited := &io.LimitedReader{R: body, N: h.opts.MaxCommand}
	pr := NewPktReader(io.TeeReader(limited, &seen))
	cmd, err := readCommand(pr, limited)
	if err != nil {
		h.opts.Metrics.Request(KindRefused)
		return err
	}
	switch cmd {
	case "fetch":
		h.opts.Metrics.Request(KindFetch)
		return h.proxy(w, r, repo, io.MultiReader(bytes.NewReader(seen.Bytes()), body), false)
	case "ls-refs":
		args, err := readLsRefs(pr, limited)
		if err != nil {
			h.opts.Metrics.Request(KindRefused)
			return err
		}
		st, ok, err := h.state(r.Context(), repo)
		if err != nil {
			return err
		}
		if !ok {
			if h.upstream == nil {
				return notServable(st)
			}
			h.opts.Metrics.Request(KindFetch)
			return h.proxy(w, r, repo, io.MultiReader(bytes.NewReader(seen.Bytes()), body), false)
		}
		h.opts.Metrics.Request(KindLsRefs)
		view := st.view(visible, args.prefixes)
		if args.format != "" && args.format != view.format {
			return fail(http.StatusBadRequest, "object-format=%s requested, the repository uses %s", args.format, view.format)
		}
		out := view.appendLsRefs(nil, args)
		hd := w.Header()
		noCache(hd)
		hd.Set("Content-Type", typeResult)
		hd.Set("Content-Length", strconv.Itoa(len(out)))
		_, _ = w.Write(out)
		return nil
	default:
		h.opts.Metrics.Request(KindRefused)
		return fail(http.StatusBadRequest, "unknown command %q: refcast serves ls-refs and fetch", bus.Clip(cmd, 40))
	}
}

// pktErr turns a read error into the client's 400 (or 413 when the
// command outgrew the limit).
func pktErr(err error, limited *io.LimitedReader, what string) error {
	if limited.N <= 0 {
		return fail(http.StatusRequestEntityTooLarge, "%s is larger than %d bytes", what, DefaultMaxCommand)
	}
	if errors.Is(err, io.EOF) {
		return fail(http.StatusBadRequest, "%s ends before its flush packet", what)
	}
	if errors.Is(err, ErrPktLine) {
		return fail(http.StatusBadRequest, "%s: %v", what, err)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// readCommand reads the first packet of a v2 request: "command=NAME".
func readCommand(pr *PktReader, limited *io.LimitedReader) (string, error) {
	k, data, err := pr.Next()
	if err != nil {
		return "", pktErr(err, limited, "the v2 request")
	}
	cmd, ok := strings.CutPrefix(string(trimLF(data)), "command=")
	if k != Data || !ok {
		return "", fail(http.StatusBadRequest, "a v2 request starts with command=NAME")
	}
	return cmd, nil
}

// readLsRefs reads the rest of an ls-refs command: capabilities until the
// delimiter, then arguments until the flush, as gitprotocol-v2 defines.
func readLsRefs(pr *PktReader, limited *io.LimitedReader) (*lsRefsArgs, error) {
	a := &lsRefsArgs{}
	inArgs := false
	for {
		k, data, err := pr.Next()
		if err != nil {
			return nil, pktErr(err, limited, "the ls-refs command")
		}
		switch k {
		case Flush:
			return a, nil
		case Delim:
			if inArgs {
				return nil, fail(http.StatusBadRequest, "ls-refs: a second delimiter packet")
			}
			inArgs = true
			continue
		case ResponseEnd:
			return nil, fail(http.StatusBadRequest, "ls-refs: unexpected response-end packet in a request")
		}
		line := string(trimLF(data))
		if !inArgs {
			if f, ok := strings.CutPrefix(line, "object-format="); ok {
				if f != "sha1" && f != "sha256" {
					return nil, fail(http.StatusBadRequest, "ls-refs: unknown object-format %q", bus.Clip(f, 40))
				}
				a.format = f
			}
			continue // agent=, server-option=: nothing for refcast to do
		}
		switch {
		case line == "symrefs":
			a.symrefs = true
		case line == "peel":
			a.peel = true
		case line == "unborn":
			a.unborn = true
		case strings.HasPrefix(line, "ref-prefix "):
			a.prefixes = append(a.prefixes, strings.TrimPrefix(line, "ref-prefix "))
		default:
			return nil, fail(http.StatusBadRequest, "ls-refs: unknown argument %q", bus.Clip(line, 60))
		}
	}
}

// writeError answers a failure in text git shows, with the 401 challenge
// git's credential helpers answer.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = &httpError{status: http.StatusInternalServerError, msg: "internal error"}
		if errors.Is(err, bus.ErrUnavailable) || errors.Is(err, bus.ErrClosed) {
			he = &httpError{status: http.StatusServiceUnavailable, msg: "the ref state is unavailable, retry later"}
		} else if r.Context().Err() == nil {
			h.opts.Logger.Error("git request failed", "path", r.URL.Path, "err", err)
		}
	}
	hd := w.Header()
	noCache(hd)
	if he.status == http.StatusUnauthorized {
		hd.Set("WWW-Authenticate", `Basic realm="refcast"`)
	}
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(he.status)
	_, _ = io.WriteString(w, he.msg+"\n")
}
