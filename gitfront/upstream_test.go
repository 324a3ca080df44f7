package gitfront

import (
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

type countMetrics struct{ upstream atomic.Int64 }

func (c *countMetrics) Request(string) {}
func (c *countMetrics) Upstream()      { c.upstream.Add(1) }

func runGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@example.com", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestHTTPUpstream clones through refcast from an http upstream, git
// http-backend served by net/http/cgi: a repo refcast has no state for is
// proxied whole, discovery included, in both protocol versions.
func TestHTTPUpstream(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	root := t.TempDir()
	bare := filepath.Join(root, "acme", "lib.git")
	runGit(t, root, "init", "-q", "--bare", "-b", "main", bare)
	work := filepath.Join(root, "work")
	runGit(t, root, "clone", "-q", bare, work)
	runGit(t, work, "commit", "-q", "--allow-empty", "-m", "one")
	runGit(t, work, "tag", "-a", "-m", "t", "v1")
	runGit(t, work, "push", "-q", "origin", "main", "--tags")
	tip := runGit(t, work, "rev-parse", "HEAD")

	gitBin, _ := exec.LookPath("git")
	origin := httptest.NewServer(&cgi.Handler{Path: gitBin, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}})
	t.Cleanup(origin.Close)
	m := &countMetrics{}
	srv := newTestHandler(t, Options{Upstream: origin.URL + "/{repo}.git", Metrics: m})

	for _, v := range []string{"0", "2"} {
		dst := filepath.Join(t.TempDir(), "c")
		runGit(t, root, "-c", "protocol.version="+v, "clone", "-q", srv.URL+"/git/acme/lib.git", dst)
		if got := runGit(t, dst, "rev-parse", "origin/main"); got != tip {
			t.Errorf("v%s clone: origin/main %s, want %s", v, got, tip)
		}
		if got := runGit(t, dst, "tag"); got != "v1" {
			t.Errorf("v%s clone: tags %q", v, got)
		}
	}
	if m.upstream.Load() == 0 {
		t.Error("no upstream request counted")
	}
}

func TestGitProtocolValue(t *testing.T) {
	for s, want := range map[string]bool{
		"version=2":                      true,
		"version=2:object-format=sha256": true,
		"a.b_c-d=1":                      true,
		strings.Repeat("a", 256):         true,
		strings.Repeat("a", 257):         false,
		"":                               false,
		"version=2 x":                    false,
		"version=2\n":                    false,
		"v=2;rm":                         false,
		"ü=1":                            false,
	} {
		if got := gitProtocolValue(s); got != want {
			t.Errorf("gitProtocolValue(%.20q) = %v, want %v", s, got, want)
		}
	}
}
