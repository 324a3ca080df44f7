package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/refcast/refcast/bus"
)

// Page sizes of GET /v1/repos. 100 names fill a dashboard's picker; 1000
// names of at most 255 bytes keep one answer under 256 KiB.
const (
	DefaultReposLimit = 100
	MaxReposLimit     = 1000
)

// RepoAuthorizer is an Authorizer that can also say, with one check of the
// credential, which repos it may read. Listing repos and suggesting names
// use it; an Authorizer without it is asked AuthorizeRead once per repo.
type RepoAuthorizer interface {
	// ReadableRepos returns a predicate for the repos the token may read
	// (public repos for an empty token). It fails, as AuthorizeRead does,
	// when a token is given but not valid. The predicate is safe for
	// concurrent use.
	ReadableRepos(token string) (func(repo string) bool, error)
}

// reposCursorPrefix versions the page cursor of /v1/repos.
const reposCursorPrefix = "r1."

// encodeReposCursor returns the opaque cursor of the page after repo.
func encodeReposCursor(repo string) string {
	return reposCursorPrefix + base64.RawURLEncoding.EncodeToString([]byte(repo))
}

// decodeReposCursor parses a page cursor back into the last repo name of
// the page before. Clients must treat it as opaque; it holds a name only so
// that a node needs no state to continue a listing another node began.
func decodeReposCursor(s string) (string, error) {
	rest, ok := strings.CutPrefix(s, reposCursorPrefix)
	// base64 of MaxRepoLen bytes is 340 characters.
	if !ok || len(rest) > base64.RawURLEncoding.EncodedLen(bus.MaxRepoLen) {
		return "", fmt.Errorf("%w: cursor %q is not a /v1/repos cursor: send the \"next\" value of the previous page", bus.ErrInvalid, bus.Clip(s, 40))
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return "", fmt.Errorf("%w: cursor %q is not a /v1/repos cursor: send the \"next\" value of the previous page", bus.ErrInvalid, bus.Clip(s, 40))
	}
	if err := bus.ValidateRepo(string(b)); err != nil {
		return "", fmt.Errorf("%w: cursor %q does not name a repo: send the \"next\" value of the previous page", bus.ErrInvalid, bus.Clip(s, 40))
	}
	return string(b), nil
}

// reposQuery is a validated GET /v1/repos request.
type reposQuery struct {
	patterns []bus.RepoPattern // empty: every repo
	limit    int
	after    string // last repo of the previous page; "" for the first
}

func parseReposQuery(q url.Values) (*reposQuery, error) {
	for k := range q {
		switch k {
		case "repo", "limit", "cursor", "access_token":
		default:
			return nil, fmt.Errorf("%w: unknown query parameter %q (known: repo, limit, cursor)", bus.ErrInvalid, bus.Clip(k, 40))
		}
	}
	rq := &reposQuery{limit: DefaultReposLimit}
	if len(q["repo"]) > bus.MaxReposPerFilter {
		return nil, fmt.Errorf("%w: %d repo patterns, at most %d", bus.ErrInvalid, len(q["repo"]), bus.MaxReposPerFilter)
	}
	for _, r := range q["repo"] {
		p, err := bus.ParseRepoPattern(r)
		if err != nil {
			return nil, err
		}
		rq.patterns = append(rq.patterns, p)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxReposLimit {
			return nil, fmt.Errorf("%w: limit must be an integer from 1 to %d, got %q", bus.ErrInvalid, MaxReposLimit, bus.Clip(v, 40))
		}
		rq.limit = n
	}
	if v := q.Get("cursor"); v != "" {
		after, err := decodeReposCursor(v)
		if err != nil {
			return nil, err
		}
		rq.after = after
	}
	return rq, nil
}

func (rq *reposQuery) match(repo string) bool {
	if len(rq.patterns) == 0 {
		return true
	}
	for _, p := range rq.patterns {
		if p.Match(repo) {
			return true
		}
	}
	return false
}

// readable returns the predicate for the repos the request's credential may
// read: every repo when the node has no Authorizer.
func (s *Server) readable(r *http.Request) (func(string) bool, error) {
	if s.opts.Auth == nil {
		return func(string) bool { return true }, nil
	}
	token := s.opts.TokenFromRequest(r)
	if ra, ok := s.opts.Auth.(RepoAuthorizer); ok {
		return ra.ReadableRepos(token)
	}
	auth := s.opts.Auth
	return func(repo string) bool {
		f, err := bus.ParseFilter([]string{repo}, nil)
		if err != nil {
			return false
		}
		_, err = auth.AuthorizeRead(token, &f)
		return err == nil
	}, nil
}

// listRepos returns up to limit repos after rq.after that match the query
// and pass visible, sorted, and whether more follow.
func (s *Server) listRepos(ctx context.Context, rq *reposQuery, visible func(string) bool) ([]string, bool, error) {
	all, err := s.opts.Bus.Repos(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("list repos: %w", err)
	}
	i := 0
	if rq.after != "" {
		var found bool
		i, found = slices.BinarySearch(all, rq.after)
		if found {
			i++
		}
	}
	out := make([]string, 0, min(rq.limit, len(all)-i))
	for ; i < len(all); i++ {
		if !rq.match(all[i]) || !visible(all[i]) {
			continue
		}
		if len(out) == rq.limit {
			return out, true, nil
		}
		out = append(out, all[i])
	}
	return out, false, nil
}

// handleRepos serves GET /v1/repos: the repos that have refs and that the
// credential may read, sorted by name, one page at a time.
func (s *Server) handleRepos(c echo.Context) error {
	r := c.Request()
	rq, err := parseReposQuery(r.URL.Query())
	if err != nil {
		return err
	}
	visible, err := s.readable(r)
	if err != nil {
		return err
	}
	repos, more, err := s.listRepos(r.Context(), rq, visible)
	if err != nil {
		return err
	}
	body := map[string]any{"repos": repos}
	if more {
		next := encodeReposCursor(repos[len(repos)-1])
		body["next"] = next
		q := url.Values{}
		for _, p := range rq.patterns {
			q.Add("repo", p.String())
		}
		q.Set("limit", strconv.Itoa(rq.limit))
		q.Set("cursor", next)
		// access_token is left out: a Link header may be logged.
		c.Response().Header().Set("Link", "</v1/repos?"+q.Encode()+`>; rel="next"`)
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "private, no-cache")
	h.Set("Vary", "Authorization, Cookie")
	return c.JSON(http.StatusOK, body)
}
