package hook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/refcast/refcast/bus"
)

// TestMain isolates git from the user's configuration for every test: HOME
// points at an empty directory with a minimal global config and the system
// config is ignored. (t.Setenv would forbid t.Parallel, so it is done once.)
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "refcast-hook-home-")
	if err != nil {
		panic(err)
	}
	for _, k := range []string{"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_PARAMETERS"} {
		os.Unsetenv(k)
	}
	os.Setenv("HOME", home)
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	os.Setenv("GIT_AUTHOR_NAME", "Ada Author")
	os.Setenv("GIT_AUTHOR_EMAIL", "ada@example.com")
	os.Setenv("GIT_COMMITTER_NAME", "Cy Committer")
	os.Setenv("GIT_COMMITTER_EMAIL", "cy@example.com")
	cfg := "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n[gc]\n\tauto = 0\n"
	if err := os.WriteFile(filepath.Join(home, ".gitconfig"), []byte(cfg), 0o600); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(home)
	if bigTmp != "" {
		os.RemoveAll(bigTmp)
	}
	os.Exit(code)
}

const gitBin = "/usr/bin/git"

// git runs git in dir and returns its trimmed output.
func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	return gitIn(t, dir, "", args...)
}

func gitIn(t testing.TB, dir, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(gitBin, append([]string{"-C", dir}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// newRepos makes a bare "server" repository and a clone with one commit on
// main pushed.
func newRepos(t testing.TB, initArgs ...string) (bare, wc string) {
	t.Helper()
	dir := t.TempDir()
	bare = filepath.Join(dir, "srv.git")
	wc = filepath.Join(dir, "wc")
	git(t, dir, append([]string{"init", "-q", "--bare"}, append(initArgs, bare)...)...)
	git(t, dir, append([]string{"init", "-q"}, append(initArgs, wc)...)...)
	git(t, wc, "remote", "add", "origin", bare)
	commit(t, wc, "first")
	git(t, wc, "push", "-q", "origin", "main")
	return bare, wc
}

func commit(t testing.TB, wc, msg string) string {
	t.Helper()
	git(t, wc, "commit", "-q", "--allow-empty", "-m", msg)
	return git(t, wc, "rev-parse", "HEAD")
}

func openRepo(t testing.TB, dir string) *Repo {
	t.Helper()
	r, err := OpenRepo(context.Background(), dir, gitBin)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// node is a fake refcast node: it records POST /v1/publish bodies and
// answers with status (200 unless set).
type node struct {
	*httptest.Server
	mu     sync.Mutex
	pushes []bus.Push
	auth   []string
	status atomic.Int32
}

func newNode(t testing.TB) *node {
	n := &node{}
	n.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/publish" {
			http.Error(w, `{"error":"not found","status":404}`, http.StatusNotFound)
			return
		}
		if s := n.status.Load(); s != 0 && s != 200 {
			w.WriteHeader(int(s))
			fmt.Fprintf(w, `{"error":"status %d","status":%d}`, s, s)
			return
		}
		var p bus.Push
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, `{"error":"bad json","status":400}`, http.StatusBadRequest)
			return
		}
		if err := p.Validate(); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"error": err.Error(), "status": 400})
			return
		}
		n.mu.Lock()
		dup := false
		for _, q := range n.pushes {
			dup = dup || q.ID == p.ID
		}
		if !dup {
			n.pushes = append(n.pushes, p)
		}
		n.auth = append(n.auth, r.Header.Get("Authorization"))
		n.mu.Unlock()
		fmt.Fprintf(w, `{"published":%d,"duplicate":%t}`, len(p.Updates), dup)
	}))
	t.Cleanup(n.Close)
	return n
}

func (n *node) got() []bus.Push {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]bus.Push(nil), n.pushes...)
}
