package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/gitfront"
	"github.com/refcast/refcast/wire"
)

// GitOptions configure the /git/ endpoints (package gitfront), which
// answer git clients' ref discovery from the bus state.
type GitOptions struct {
	// Upstream is the git server fetches are proxied to: an http(s) URL or
	// an absolute path template with {repo}. "" serves discovery only.
	Upstream string
	// Agent is the agent= capability, "refcast/VERSION".
	Agent string
	// Git is the git binary a local upstream runs; "git" when empty.
	Git string
	// Features are the upstream's optional capabilities to advertise
	// (gitfront.Features: "filter", ...).
	Features []string
}

// RefAuthorizer is an Authorizer that can say which refs of a repo a token
// reads, so a token limited to some ref patterns sees only those refs in
// a git advertisement. Without it the node asks AuthorizeRead for every ref
// of the repo, and a token covering fewer is refused.
type RefAuthorizer interface {
	ReadableRefs(token, repo string) (func(ref string) bool, error)
}

// gitMetrics back gitfront.Metrics.
type gitMetrics struct {
	requests *prometheus.CounterVec
	upstream prometheus.Counter
}

func newGitMetrics(reg prometheus.Registerer) *gitMetrics {
	m := &gitMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refcast_git_requests_total",
			Help: "Requests of git clients under /git/, by kind: discovery and ls-refs answered from the state, discovery-upstream and fetch proxied, refused."},
			[]string{"kind"}),
		upstream: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_git_upstream_requests_total",
			Help: "Requests this node made to the git upstream (processes run or HTTP requests)."}),
	}
	reg.MustRegister(m.requests, m.upstream)
	for _, k := range []string{gitfront.KindDiscovery, gitfront.KindDiscoveryUpstream, gitfront.KindLsRefs, gitfront.KindFetch, gitfront.KindRefused} {
		m.requests.WithLabelValues(k)
	}
	return m
}

func (m *gitMetrics) Request(kind string) { m.requests.WithLabelValues(kind).Inc() }
func (m *gitMetrics) Upstream()           { m.upstream.Inc() }

// gitHandler builds the /git/ handler.
func (s *Server) gitHandler() (http.Handler, error) {
	h, err := gitfront.New(gitfront.Options{
		State:    s.opts.Bus,
		Upstream: s.opts.Git.Upstream,
		Agent:    s.opts.Git.Agent,
		Git:      s.opts.Git.Git,
		Features: s.opts.Git.Features,
		Access:   s.gitAccess,
		Metrics:  newGitMetrics(s.reg),
		Logger:   s.log.With("component", "git"),
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return h, nil
}

// gitToken is a git client's credential: the password of HTTP Basic (git's
// credential helpers send user:token), or an Authorization: Bearer header
// (http.extraHeader).
func gitToken(r *http.Request) string {
	if _, pw, ok := r.BasicAuth(); ok {
		return pw
	}
	return wire.BearerToken(r)
}

// gitAccess decides what a git client may see of repo.
func (s *Server) gitAccess(r *http.Request, repo string) (func(string) bool, error) {
	if s.opts.Auth == nil {
		return nil, nil
	}
	token := gitToken(r)
	if ra, ok := s.opts.Auth.(RefAuthorizer); ok {
		visible, err := ra.ReadableRefs(token, repo)
		return visible, gitAuthErr(err)
	}
	p, err := bus.ParseRepoPattern(repo)
	if err != nil {
		return nil, err
	}
	_, err = s.opts.Auth.AuthorizeRead(token, &bus.Filter{Repos: []bus.RepoPattern{p}})
	return nil, gitAuthErr(err)
}

func gitAuthErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnauthorized):
		return fmt.Errorf("%w: %v", gitfront.ErrUnauthorized, err)
	case errors.Is(err, ErrForbidden):
		return fmt.Errorf("%w: %v", gitfront.ErrForbidden, err)
	}
	return err
}

// mountGit routes every method under gitfront.Prefix to h.
func mountGit(e *echo.Echo, h http.Handler) {
	e.Any(gitfront.Prefix+"*", echo.WrapHandler(h))
}
