package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// exitOf is the exit status of a finished command: 0, its code, or -1 when
// it did not run.
func exitOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func (w *hookWorld) installed() bool {
	_, err := os.Stat(filepath.Join(w.bare, "hooks", "post-receive"))
	return err == nil
}

// TestInstallHookValidates: settings that would fail every push are refused
// at install time with exit 2 and a message saying what to give, and
// nothing is installed. Before, each of these installed and exited 0.
func TestInstallHookValidates(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, env, want string
		args            []string
	}{
		{"no destination", "", "no destination: give --url", nil},
		{"url without scheme", "", `"127.0.0.1:18081" must be http://HOST`, []string{"--url", "127.0.0.1:18081"}},
		{"url without host", "", "must be http://HOST", []string{"--url", "http://"}},
		{"url of another scheme", "", "must be http://HOST", []string{"--url", "ftp://127.0.0.1:1"}},
		{"redis url of another scheme", "", "must start with redis://", []string{"--redis", "http://127.0.0.1:6379"}},
		{"both", "", "keep one", []string{"--url", "http://127.0.0.1:1", "--redis", "redis://127.0.0.1:1"}},
		{"repo name with a space", "", "demo app", []string{"--url", "http://127.0.0.1:1", "--repo", "demo app"}},
		{"token with a newline", "REFCAST_TOKEN=abc\n", "publish token", []string{"--url", "http://127.0.0.1:1"}},
		{"token with a space", "REFCAST_TOKEN=a b", "publish token", []string{"--url", "http://127.0.0.1:1"}},
		{"url from the environment", "REFCAST_URL=localhost:8080", "must be http://HOST", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var extra []string
			if tc.env != "" {
				extra = append(extra, tc.env)
			}
			w := newHookWorld(t, extra...)
			out, err := w.refcast(w.bare, "", append([]string{"install-hook", w.bare, "--binary", w.exe}, tc.args...)...)
			if exitOf(err) != 2 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output %q; want exit 2 and %q", exitOf(err), out, tc.want)
			}
			if w.installed() {
				t.Fatal("the hook was installed anyway")
			}
		})
	}
}

// TestInstallHookEmptyConfigToken: a refcast.token key present but empty is
// refused, not silently sent without credentials.
func TestInstallHookEmptyConfigToken(t *testing.T) {
	t.Parallel()
	w := newHookWorld(t)
	w.git(w.bare, "config", "refcast.token", "")
	out, err := w.refcast(w.bare, "", "install-hook", w.bare, "--binary", w.exe, "--url", "http://127.0.0.1:1")
	if exitOf(err) != 2 || !strings.Contains(out, "set but empty") {
		t.Fatalf("exit %d, output %q", exitOf(err), out)
	}
}

// TestInstallHookCheckNode: --check proves, against a real node, that the
// URL answers and the token is accepted, publishes nothing, and installs
// only when both hold; `refcast hook check` in the repository does the same
// for what is installed.
func TestInstallHookCheckNode(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", "right-token", "--drain", "100ms")
	down := "http://" + testnode.FreeAddr(t)

	cases := []struct {
		name, token, url string
		code             int
		want             string
	}{
		{"right token", "right-token", node.URL, 0, "accepts the publish token for srv (nothing published)"},
		{"wrong token", "wrong-token", node.URL, 1, "not authorized"},
		{"no token", "", node.URL, 1, "not authorized"},
		{"node down", "right-token", down, 1, "does not answer"},
		{"not the base url", "right-token", node.URL + "/v1/refs", 1, "not a refcast node"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var extra []string
			if tc.token != "" {
				extra = append(extra, "REFCAST_TOKEN="+tc.token)
			}
			w := newHookWorld(t, extra...)
			out, err := w.refcast(w.bare, "", "install-hook", w.bare, "--binary", w.exe, "--url", tc.url, "--check")
			if exitOf(err) != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("install-hook --check: exit %d, output %q; want %d and %q", exitOf(err), out, tc.code, tc.want)
			}
			if w.installed() != (tc.code == 0) {
				t.Fatalf("installed %v after exit %d", w.installed(), tc.code)
			}
			if tc.code != 0 {
				return
			}
			out, err = w.refcast(w.bare, "", "hook", "check")
			if exitOf(err) != 0 || !strings.Contains(out, tc.want) {
				t.Fatalf("hook check: exit %d, output %q", exitOf(err), out)
			}
			w.git(w.bare, "config", "refcast.token", "stale-token")
			w.env = append(w.env, "REFCAST_TOKEN=") // let git config speak
			out, err = w.refcast(w.bare, "", "hook", "check")
			if exitOf(err) != 1 || !strings.Contains(out, "not authorized") {
				t.Fatalf("hook check with a stale token: exit %d, output %q", exitOf(err), out)
			}
		})
	}
	res, err := http.Get(node.URL + "/v1/refs?repo=srv")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if strings.Contains(string(body), "refs/heads/") {
		t.Fatalf("a check published something: %s", body)
	}
}

// TestInstallHookCheckRedis: with --redis the check is a PING through the
// bus the hook would open.
func TestInstallHookCheckRedis(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Options{})
	w := newHookWorld(t)
	out, err := w.refcast(w.bare, "", "install-hook", w.bare, "--binary", w.exe, "--redis", rs.URL(), "--check")
	if exitOf(err) != 0 || !strings.Contains(out, "answers (nothing published)") || !w.installed() {
		t.Fatalf("install-hook --check: exit %d, output %q", exitOf(err), out)
	}
	rs.Kill()
	out, err = w.refcast(w.bare, "", "hook", "check", "--timeout", "2s")
	if exitOf(err) != 1 || !strings.Contains(out, "does not answer") {
		t.Fatalf("hook check with Redis down: exit %d, output %q", exitOf(err), out)
	}
}

// TestInstallHookWarnsTemporaryBinary: a binary that `go run` left in a
// temporary build directory is installed with a warning to build it first.
func TestInstallHookWarnsTemporaryBinary(t *testing.T) {
	t.Parallel()
	w := newHookWorld(t)
	tmp := filepath.Join(os.TempDir(), "go-build123456", "b001", "exe", "refcast")
	out, err := w.refcast(w.bare, "", "install-hook", w.bare, "--binary", tmp, "--url", "http://127.0.0.1:1")
	if err != nil || !strings.Contains(out, "temporary Go build directory") || !strings.Contains(out, "go build") {
		t.Fatalf("exit %d, output %q", exitOf(err), out)
	}
	w2 := newHookWorld(t)
	out, err = w2.refcast(w2.bare, "", "install-hook", w2.bare, "--binary", "/usr/local/bin/refcast", "--url", "http://127.0.0.1:1")
	if err != nil || strings.Contains(out, "warning") {
		t.Fatalf("a lasting binary: exit %d, output %q", exitOf(err), out)
	}
}

// TestHookOutsideRepository: the hook run by hand outside a repository says
// how it is meant to run instead of `find repository in ""`.
func TestHookOutsideRepository(t *testing.T) {
	t.Parallel()
	w := newHookWorld(t)
	a, b := strings.Repeat("1", 40), strings.Repeat("2", 40)
	out, err := w.refcast(t.TempDir(), a+" "+b+" refs/heads/main\n", "hook", "post-receive", "--url", "http://127.0.0.1:1")
	if exitOf(err) != 2 || !strings.Contains(out, "GIT_DIR is unset") || !strings.Contains(out, "refcast install-hook") || strings.Contains(out, `in ""`) {
		t.Fatalf("exit %d, output %q", exitOf(err), out)
	}
}
