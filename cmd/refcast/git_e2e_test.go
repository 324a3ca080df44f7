package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// gitOut runs git and returns its output and error, without failing.
func gitOut(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(append(testnode.GitEnv(t), "GIT_TERMINAL_PROMPT=0"), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func sortedLines(s string) []string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(l)
	return l
}

// metricValue reads one unlabelled sample from /metrics.
func metricValue(t *testing.T, base, name string) string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return v
		}
	}
	t.Fatalf("metric %s not found", name)
	return ""
}

// gitServerRepo makes srv/acme/app.git with branches, a lightweight and an
// annotated tag and HEAD on dev, the hook installed, and seeds it.
func gitServerRepo(t *testing.T, bin, root, nodeURL, token string) (bare, work string) {
	t.Helper()
	bare, work = gitFrontRepo(t, bin, root, nodeURL, token, "main")
	g := func(args ...string) string { return testnode.Git(t, work, nil, args...) }
	g("commit", "-q", "--allow-empty", "-m", "one")
	g("branch", "dev")
	g("tag", "light")
	g("commit", "-q", "--allow-empty", "-m", "two")
	g("tag", "-a", "-m", "release", "v1")
	g("push", "-q", "origin", "main", "dev", "--tags")
	testnode.Git(t, bare, nil, "symbolic-ref", "HEAD", "refs/heads/dev")
	cmd := exec.Command(bin, "sync", bare, "--url", nodeURL, "--repo", "acme/app")
	cmd.Env = append(testnode.GitEnv(t), "REFCAST_TOKEN="+token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	return bare, work
}

// gitFrontRepo makes an empty root/acme/app.git (where a --git-upstream
// of root/{repo}.git finds it) whose HEAD is branch, with the hook
// installed to publish to nodeURL with token, and a clone of it.
func gitFrontRepo(t *testing.T, bin, root, nodeURL, token, branch string) (bare, work string) {
	t.Helper()
	bare = filepath.Join(root, "acme", "app.git")
	work = hookedRepoAt(t, bin, bare, branch, "--url", nodeURL, "--repo", "acme/app")
	testnode.Git(t, bare, nil, "config", "refcast.token", token)
	return bare, work
}

// requireLsRemoteEqual checks that git ls-remote through url, under
// protocol v0 and v2, lists what ls-remote on bare does, sorted.
func requireLsRemoteEqual(t *testing.T, root, bare, url string) {
	t.Helper()
	want := sortedLines(testnode.Git(t, root, nil, "ls-remote", bare))
	for _, v := range []string{"0", "2"} {
		out, err := gitOut(t, root, nil, "-c", "protocol.version="+v, "ls-remote", url)
		if err != nil {
			t.Fatalf("v%s ls-remote: %v\n%s", v, err, out)
		}
		if got := sortedLines(out); !slices.Equal(got, want) {
			t.Errorf("v%s ls-remote through refcast:\n%s\nwant\n%s", v, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// TestGitClientEndToEnd: plain git against /git/ with a local-path
// upstream.
func TestGitClientEndToEnd(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	const token = "git-token"
	root := t.TempDir()
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", token, "--drain", "100ms",
		"--git-upstream", filepath.Join(root, "{repo}.git"))
	bare, work := gitServerRepo(t, bin, root, node.URL, token)
	url := node.URL + "/git/acme/app.git"

	requireLsRemoteEqual(t, root, bare, url)
	// Under v2 only the refs asked for cross the wire.
	trace := filepath.Join(t.TempDir(), "trace")
	for _, tc := range []struct{ args, absent []string }{
		{[]string{"--heads"}, []string{"refs/tags/"}},
		{[]string{"--tags"}, []string{"refs/heads/"}},
		{[]string{"", "dev"}, []string{"refs/tags/", "refs/heads/main"}},
	} {
		args := append([]string{"-c", "protocol.version=2", "ls-remote"}, tc.args[0])
		if tc.args[0] == "" {
			args = append(args[:3], url, tc.args[1])
		} else {
			args = append(args, url)
		}
		os.Remove(trace)
		if out, err := gitOut(t, root, []string{"GIT_TRACE_PACKET=" + trace}, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		b, _ := os.ReadFile(trace)
		for _, line := range strings.Split(string(b), "\n") {
			for _, a := range tc.absent {
				if strings.Contains(line, "git< ") && strings.Contains(line, a) {
					t.Errorf("%v: received %q", tc.args, line)
				}
			}
		}
	}

	clone := filepath.Join(t.TempDir(), "clone")
	if out, err := gitOut(t, root, nil, "clone", "-q", url, clone); err != nil {
		t.Fatalf("clone: %v\n%s", err, out)
	}
	if b := testnode.Git(t, clone, nil, "rev-parse", "--abbrev-ref", "HEAD"); b != "dev" {
		t.Errorf("clone checked out %q, want dev (the server's HEAD)", b)
	}
	before := metricValue(t, node.URL, "refcast_git_upstream_requests_total")
	for _, v := range []string{"0", "2"} {
		if out, err := gitOut(t, clone, nil, "-c", "protocol.version="+v, "fetch", "-q", "origin"); err != nil {
			t.Fatalf("no-op fetch v%s: %v\n%s", v, err, out)
		}
	}
	if after := metricValue(t, node.URL, "refcast_git_upstream_requests_total"); after != before {
		t.Errorf("no-op fetches reached the upstream: %s -> %s requests", before, after)
	}
	testnode.Git(t, work, nil, "commit", "-q", "--allow-empty", "-m", "three")
	tip := testnode.Git(t, work, nil, "rev-parse", "HEAD")
	testnode.Git(t, work, nil, "push", "-q", "origin", "main")
	if out, err := gitOut(t, clone, nil, "fetch", "-q", "origin"); err != nil {
		t.Fatalf("fetch after push: %v\n%s", err, out)
	}
	if got := testnode.Git(t, clone, nil, "rev-parse", "origin/main"); got != tip {
		t.Errorf("origin/main after fetch = %s, want %s", got, tip)
	}
	if out, err := gitOut(t, clone, nil, "push", "origin", "HEAD:refs/heads/x"); err == nil || !strings.Contains(out, "push to the git server") {
		t.Errorf("push through refcast: %v\n%s", err, out)
	}
	if out, err := gitOut(t, root, nil, "ls-remote", node.URL+"/git/acme/none.git"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("unknown repo: %v\n%s", err, out)
	}

	// The advertisement names a tip the upstream does not have (a
	// force-push the hook has not published yet, or a state that is
	// ahead): fetching it fails with git's own error from the upstream,
	// it does not hang. The hang guard is the test binary's -timeout.
	stale := strings.Repeat("5", 40)
	body := fmt.Sprintf(`{"id":"stale-tip","repo":"acme/app","time":%q,"head":"refs/heads/dev","updates":[{"ref":"refs/heads/stale","old":"%s","new":"%s"}]}`,
		time.Now().UTC().Format(time.RFC3339), strings.Repeat("0", 40), stale)
	req, _ := http.NewRequest(http.MethodPost, node.URL+"/v1/publish", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("publish of a stale tip: %d", res.StatusCode)
	}
	out, err := gitOut(t, clone, nil, "-c", "protocol.version=2", "ls-remote", "origin", "refs/heads/stale")
	if err != nil || !strings.Contains(out, stale) {
		t.Fatalf("the stale tip is not advertised (%v): %s", err, out)
	}
	out, err = gitOut(t, clone, nil, "fetch", "origin", "refs/heads/stale")
	if err == nil {
		t.Fatalf("fetch of a tip the upstream lacks succeeded:\n%s", out)
	}
	if !strings.Contains(out, "not our ref") && !strings.Contains(out, stale) {
		t.Errorf("fetch of a missing tip failed without git's error naming it:\n%s", out)
	}
	t.Logf("fetch of a missing tip: %s", strings.TrimSpace(out))
}

// TestGitClientAuth: a private repo asks git for credentials; the token
// works as the Basic password; a token limited to refs/heads/* sees no
// tags.
func TestGitClientAuth(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(strings.Repeat("s3cr3t-", 8)), 0o600)
	mint := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"token", "--secret-file", secret, "--ttl", "1h"}, args...)...).Output()
		if err != nil {
			t.Fatalf("refcast token %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	root := t.TempDir()
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--auth-secret-file", secret, "--drain", "100ms",
		"--git-upstream", filepath.Join(root, "{repo}.git"))
	gitServerRepo(t, bin, root, node.URL, mint("--publish", "acme/*"))
	path := "/git/acme/app.git"

	out, err := gitOut(t, root, nil, "ls-remote", node.URL+path)
	if err == nil || !(strings.Contains(out, "Authentication failed") || strings.Contains(out, "terminal prompts disabled")) {
		t.Fatalf("anonymous ls-remote of a private repo: %v\n%s", err, out)
	}
	withToken := func(tok string) string { return strings.Replace(node.URL, "://", "://git:"+tok+"@", 1) + path }
	out, err = gitOut(t, root, nil, "ls-remote", withToken(mint("--read", "acme/*")))
	if err != nil || !strings.Contains(out, "refs/tags/v1") {
		t.Fatalf("ls-remote with a read token: %v\n%s", err, out)
	}
	out, err = gitOut(t, root, nil, "ls-remote", withToken(mint("--read", "acme/*:refs/heads/*")))
	if err != nil || strings.Contains(out, "refs/tags/") || !strings.Contains(out, "refs/heads/main") {
		t.Fatalf("ls-remote with a heads-only token: %v\n%s", err, out)
	}
}

// largeRepo makes a bare repository with n branches and n/10 tags (every
// tenth an annotated one, so the seed carries peels), written with one
// `git update-ref --stdin` and `git fast-import` and packed, as a host's
// big repository is.
func largeRepo(t testing.TB, dir string, n int) string {
	t.Helper()
	bare := filepath.Join(dir, "big.git")
	testnode.Git(t, dir, nil, "init", "-q", "--bare", "-b", "main", bare)
	env := []string{"GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z"}
	tree := testnode.Git(t, bare, nil, "hash-object", "-t", "tree", "-w", "/dev/null")
	c1 := testnode.Git(t, bare, env, "commit-tree", "-m", "one", tree)
	c2 := testnode.Git(t, bare, env, "commit-tree", "-m", "two", "-p", c1, tree)
	testnode.Git(t, bare, nil, "update-ref", "refs/heads/main", c2)
	var in strings.Builder
	for i := range n {
		id := c1
		if i%2 == 0 {
			id = c2
		}
		fmt.Fprintf(&in, "create refs/heads/b%06d %s\n", i, id)
		if i%10 == 0 {
			fmt.Fprintf(&in, "create refs/tags/t%06d %s\n", i, id)
		}
	}
	cmd := exec.Command("git", "update-ref", "--stdin")
	cmd.Dir, cmd.Env, cmd.Stdin = bare, testnode.GitEnv(t), strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("update-ref --stdin: %v\n%s", err, out)
	}
	// Annotated tags need objects: fewer of them, all from one fast-import.
	var fi strings.Builder
	for i := 0; i < n; i += 100 {
		fmt.Fprintf(&fi, "tag v%06d\nfrom %s\ntagger T <t@example.com> 1767225600 +0000\ndata 7\nrelease\n", i, c2)
	}
	cmd = exec.Command("git", "fast-import", "--quiet")
	cmd.Dir, cmd.Env, cmd.Stdin = bare, testnode.GitEnv(t), strings.NewReader(fi.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fast-import: %v\n%s", err, out)
	}
	testnode.Git(t, bare, nil, "pack-refs", "--all")
	return bare
}

// TestGitLargeSync: a repository with more refs than one push may carry
// (bus.MaxUpdatesPerPush) is seeded by `refcast sync` through a real node,
// becomes complete (served without the upstream) and git ls-remote through
// refcast equals the repository's own.
func TestGitLargeSync(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	const token = "git-token"
	root := t.TempDir()
	bare := largeRepo(t, root, 20000)
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", token, "--drain", "100ms",
		"--git-upstream", filepath.Join(root, "{repo}.git"))
	cmd := exec.Command(bin, "sync", bare, "--url", node.URL, "--repo", "big")
	cmd.Env = append(testnode.GitEnv(t), "REFCAST_TOKEN="+token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	want := sortedLines(testnode.Git(t, root, nil, "ls-remote", bare))
	if len(want) < 20000 {
		t.Fatalf("generated repository has %d refs", len(want))
	}
	for _, v := range []string{"0", "2"} {
		out, err := gitOut(t, root, nil, "-c", "protocol.version="+v, "ls-remote", node.URL+"/git/big.git")
		if err != nil {
			t.Fatalf("v%s ls-remote: %v\n%s", v, err, out)
		}
		if got := sortedLines(out); !slices.Equal(got, want) {
			t.Errorf("v%s ls-remote through refcast: %d lines, want %d (first difference near %q)", v, len(got), len(want), firstDiff(got, want))
		}
	}
	if n := metricValue(t, node.URL, "refcast_git_upstream_requests_total"); n != "0" {
		t.Errorf("discovery of the seeded repo reached the upstream %s times: the state is not complete", n)
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i]
		}
	}
	return ""
}

// TestGitStateCompletedByPush: a repo whose state was seeded before
// refcast kept HEAD and tag peels (a seed without them) is proxied to the
// upstream; its next push through the hook seeds it once, and from then on
// git clients are answered from the state, equal to the repository's own.
// The hook learns it from the node's answer (--url) or from the bus
// (--redis).
func TestGitStateCompletedByPush(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	t.Run("url", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", "git-token", "--drain", "100ms",
			"--git-upstream", filepath.Join(root, "{repo}.git"))
		testGitStateCompletedByPush(t, bin, root, node, "")
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		testnode.Require(t, "redis-server")
		rs := redistest.Start(t, redistest.Options{})
		root := t.TempDir()
		node := testnode.Start(t, bin, "", "--redis", rs.URL(), "--publish-token", "git-token", "--drain", "100ms",
			"--git-upstream", filepath.Join(root, "{repo}.git"))
		testGitStateCompletedByPush(t, bin, root, node, rs.URL())
	})
}

func testGitStateCompletedByPush(t *testing.T, bin, root string, node *testnode.Node, redisURL string) {
	const token = "git-token"
	bare, work := gitServerRepo(t, bin, root, node.URL, token)
	if redisURL != "" { // the hook publishes to Redis itself from now on
		testnode.Git(t, bare, nil, "config", "--unset", "refcast.url")
		testnode.Git(t, bare, nil, "config", "refcast.redis", redisURL)
	}
	url := node.URL + "/git/acme/app.git"

	// The old kind of seed: every ref, no HEAD, no peels.
	var ups []string
	for _, line := range sortedLines(testnode.Git(t, bare, nil, "for-each-ref", "--format=%(refname) %(objectname)", "refs/")) {
		ref, id, _ := strings.Cut(line, " ")
		ups = append(ups, fmt.Sprintf(`{"ref":%q,"old":"","new":%q}`, ref, id))
	}
	body := fmt.Sprintf(`{"id":"old-seed","repo":"acme/app","time":%q,"source":"sync","seed":true,"updates":[%s]}`,
		time.Now().UTC().Format(time.RFC3339), strings.Join(ups, ","))
	req, _ := http.NewRequest(http.MethodPost, node.URL+"/v1/publish", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("old-style seed: %d", res.StatusCode)
	}

	lsRemote := func(step string) (proxied bool) {
		t.Helper()
		before := metricValue(t, node.URL, "refcast_git_upstream_requests_total")
		want := sortedLines(testnode.Git(t, root, nil, "ls-remote", bare))
		out, err := gitOut(t, root, nil, "-c", "protocol.version=2", "ls-remote", url)
		if err != nil {
			t.Fatalf("%s: ls-remote: %v\n%s", step, err, out)
		}
		if got := sortedLines(out); !slices.Equal(got, want) {
			t.Errorf("%s: ls-remote through refcast:\n%s\nwant\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		return metricValue(t, node.URL, "refcast_git_upstream_requests_total") != before
	}
	if !lsRemote("incomplete state") {
		t.Errorf("an incomplete state was advertised instead of proxied")
	}

	testnode.Git(t, work, nil, "commit", "-q", "--allow-empty", "-m", "three")
	out, err := gitOut(t, work, nil, "push", "origin", "main")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	if !strings.Contains(out, "seeded acme/app") {
		t.Errorf("the push's hook did not say it seeded the repo:\n%s", out)
	}
	if lsRemote("after the push") {
		t.Errorf("the state is still proxied after the push completed it")
	}
	// Once complete, later pushes do not seed again.
	testnode.Git(t, work, nil, "commit", "-q", "--allow-empty", "-m", "four")
	if out, err := gitOut(t, work, nil, "push", "origin", "main"); err != nil || strings.Contains(out, "seeded") {
		t.Errorf("second push (%v) seeded again:\n%s", err, out)
	}
	if lsRemote("after the second push") {
		t.Errorf("proxied after the second push")
	}
}

// TestGitPartialClone: with --git-upstream-feature filter (the upstream
// allows filters), `git clone --filter=blob:none` through refcast is a
// partial clone under v0 and v2; without it git is told nothing of
// filters and clones everything, as it would from a server without them.
func TestGitPartialClone(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	const token = "git-token"
	root := t.TempDir()
	withFilter := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", token, "--drain", "100ms",
		"--git-upstream", filepath.Join(root, "{repo}.git"), "--git-upstream-feature", "filter")
	bare, work := gitServerRepo(t, bin, root, withFilter.URL, token)
	testnode.Git(t, bare, nil, "config", "uploadpack.allowFilter", "true")
	os.WriteFile(filepath.Join(work, "big"), []byte(strings.Repeat("blob ", 1000)), 0o644)
	testnode.Git(t, work, nil, "add", "big")
	testnode.Git(t, work, nil, "commit", "-q", "-m", "a blob")
	testnode.Git(t, work, nil, "push", "-q", "origin", "main")

	for _, v := range []string{"0", "2"} {
		clone := filepath.Join(t.TempDir(), "clone")
		out, err := gitOut(t, root, nil, "-c", "protocol.version="+v, "clone", "-q", "--no-checkout", "--filter=blob:none", withFilter.URL+"/git/acme/app.git", clone)
		if err != nil || strings.Contains(out, "filtering not recognized") {
			t.Fatalf("v%s partial clone: %v\n%s", v, err, out)
		}
		if f := testnode.Git(t, clone, nil, "config", "remote.origin.partialclonefilter"); f != "blob:none" {
			t.Errorf("v%s: partialclonefilter %q, want blob:none", v, f)
		}
		// The blob was left out: only its id is known.
		missing := testnode.Git(t, clone, nil, "rev-list", "--objects", "--missing=print", "origin/main")
		if !strings.Contains(missing, "?") {
			t.Errorf("v%s: no missing object in the partial clone:\n%s", v, missing)
		}
	}

	plain := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", token, "--drain", "100ms",
		"--git-upstream", filepath.Join(root, "{repo}.git"))
	cmd := exec.Command(bin, "sync", bare, "--url", plain.URL, "--repo", "acme/app")
	cmd.Env = append(testnode.GitEnv(t), "REFCAST_TOKEN="+token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	clone := filepath.Join(t.TempDir(), "clone")
	out, err := gitOut(t, root, nil, "-c", "protocol.version=2", "clone", "-q", "--no-checkout", "--filter=blob:none", plain.URL+"/git/acme/app.git", clone)
	if err != nil || !strings.Contains(out, "filtering not recognized") {
		t.Errorf("clone --filter without the feature: %v, want git's warning that the server does not filter:\n%s", err, out)
	}
}

// TestGitNewRepoCompleteAtFirstPush: a new repository's first push (its
// every ref) makes the state complete on its own: git clients are answered
// from refcast at once, with no seed, no sync event and nothing said to the
// pusher.
func TestGitNewRepoCompleteAtFirstPush(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git")
	bin := testnode.Build(t)
	const token = "git-token"
	root := t.TempDir()
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--publish-token", token, "--drain", "100ms",
		"--git-upstream", filepath.Join(root, "{repo}.git"))
	bare, work := gitFrontRepo(t, bin, root, node.URL, token, "trunk")
	g := func(args ...string) string { return testnode.Git(t, work, nil, args...) }
	g("checkout", "-q", "-b", "trunk")
	g("commit", "-q", "--allow-empty", "-m", "one")
	g("branch", "dev")
	g("tag", "light")
	g("tag", "-a", "-m", "release", "v1")
	out, err := gitOut(t, work, nil, "push", "origin", "trunk", "dev", "--tags")
	if err != nil {
		t.Fatalf("first push: %v\n%s", err, out)
	}
	if strings.Contains(out, "refcast") {
		t.Errorf("the first push's hook said something:\n%s", out)
	}

	requireLsRemoteEqual(t, root, bare, node.URL+"/git/acme/app.git")
	if n := metricValue(t, node.URL, "refcast_git_upstream_requests_total"); n != "0" {
		t.Errorf("discovery after the first push reached the upstream %s times: the state is not complete", n)
	}

	res, err := http.Get(node.URL + "/v1/history?repo=acme/app")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var hist struct {
		Events []struct {
			Kind string `json:"kind"`
			Ref  string `json:"ref"`
		} `json:"events"`
	}
	if err := json.NewDecoder(res.Body).Decode(&hist); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range hist.Events {
		kinds = append(kinds, e.Kind+" "+e.Ref)
	}
	slices.Sort(kinds)
	if wantKinds := []string{"create refs/heads/dev", "create refs/heads/trunk", "create refs/tags/light", "create refs/tags/v1"}; !slices.Equal(kinds, wantKinds) {
		t.Errorf("history of the first push: %v, want %v", kinds, wantKinds)
	}
}
