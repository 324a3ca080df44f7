//go:build linux || darwin

package gitfront

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
)

// BenchmarkGitFront answers the requests of two git operations, recorded
// from git itself, from refcast (this handler on a memory bus seeded with
// the repository's state) and from `git http-backend` (through
// net/http/cgi) on the same generated repository, side by side:
//
//   - noop-fetch-v2: `git fetch --no-tags origin main` with nothing new,
//     protocol v2 (capability advertisement, then ls-refs with the
//     ref-prefixes of one branch);
//   - ls-remote-v0: `git ls-remote` with protocol v0 (the full
//     advertisement).
//
// Server CPU is user+system time from getrusage: refcast is this process
// (RUSAGE_SELF, which also holds the Go client reading the answer, so the
// figure is an upper bound), http-backend is this process plus the CGI
// children it waited for (RUSAGE_CHILDREN: http-backend and the
// upload-pack it runs). Reported per operation, with wall time, bytes
// sent and the CPU ratio; refcast-cold-cpu-µs is refcast's first answer
// with an empty snapshot cache, what an operation costs right after a
// push to the repo. The repository has REFCAST_BENCH_GIT_REFS
// branches (10,000 by default; docs/performance.md records 100,000) plus a
// tag for every tenth and an annotated tag for every hundredth.
func BenchmarkGitFront(b *testing.B) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		b.Skip("git not installed")
	}
	n := 10000
	if s := os.Getenv("REFCAST_BENCH_GIT_REFS"); s != "" {
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("REFCAST_BENCH_GIT_REFS=%q: want a positive number of branches", s)
		}
	}
	root := b.TempDir()
	bare := benchRepo(b, root, n)

	mb, err := memory.New(memory.Options{Partitions: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mb.Close() })
	seed := benchSeed(b, bare)
	if _, err := mb.Publish(context.Background(), seed); err != nil {
		b.Fatal(err)
	}
	// A fresh handler has an empty snapshot cache: its first answer is
	// what a request costs after every push to the repo.
	fresh := func() http.Handler {
		h, err := New(Options{State: mb, Agent: "refcast/bench"})
		if err != nil {
			b.Fatal(err)
		}
		return h
	}
	rec := &recorder{next: fresh()}
	refcast := httptest.NewServer(rec)
	b.Cleanup(refcast.Close)
	backend := httptest.NewServer(&cgi.Handler{Path: gitBin, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}})
	b.Cleanup(backend.Close)

	// A repository that already has main, so the fetch is a no-op.
	local := filepath.Join(root, "local")
	benchGit(b, root, "init", "-q", "--bare", local)
	benchGit(b, local, "fetch", "-q", "--no-tags", bare, "refs/heads/main:refs/remotes/origin/main")
	benchGit(b, local, "remote", "add", "origin", refcast.URL+"/git/big.git")

	ops := []struct {
		name string
		args []string
	}{
		{"noop-fetch-v2", []string{"-c", "protocol.version=2", "fetch", "-q", "--no-tags", "origin", "main"}},
		{"ls-remote-v0", []string{"-c", "protocol.version=0", "ls-remote", "origin"}},
	}
	for _, op := range ops {
		reqs := rec.record(func() { benchGit(b, local, op.args...) })
		if len(reqs) == 0 {
			b.Fatalf("%s: git sent no request", op.name)
		}
		if op.name == "noop-fetch-v2" {
			checkOnlyPrefixes(b, refcast.URL, reqs)
		}
		b.Run(op.name, func(b *testing.B) {
			rec.setNext(fresh())
			cold := replay(b, refcast.URL, reqs)
			b.ResetTimer()
			var ours, theirs cost
			for b.Loop() {
				ours.add(replay(b, refcast.URL, reqs))
				theirs.add(replay(b, backend.URL, withoutPrefix(reqs)))
			}
			ops := float64(b.N)
			b.ReportMetric(float64(cold.cpu.Microseconds()), "refcast-cold-cpu-µs")
			b.ReportMetric(float64(ours.cpu.Microseconds())/ops, "refcast-cpu-µs/op")
			b.ReportMetric(float64(theirs.cpu.Microseconds())/ops, "backend-cpu-µs/op")
			b.ReportMetric(float64(theirs.cpu)/float64(max(ours.cpu, 1)), "cpu-ratio")
			b.ReportMetric(float64(ours.wall.Microseconds())/ops, "refcast-wall-µs/op")
			b.ReportMetric(float64(theirs.wall.Microseconds())/ops, "backend-wall-µs/op")
			b.ReportMetric(float64(ours.bytes)/ops, "refcast-B/op")
			b.ReportMetric(float64(theirs.bytes)/ops, "backend-B/op")
		})
	}
}

// benchRepo makes root/big.git with n branches on two commits, a tag on
// every tenth, an annotated tag on every hundredth and HEAD on main,
// refs packed as on a host.
func benchRepo(b *testing.B, root string, n int) string {
	bare := filepath.Join(root, "big.git")
	benchGit(b, root, "init", "-q", "--bare", "-b", "main", bare)
	tree := benchGit(b, bare, "hash-object", "-t", "tree", "-w", "/dev/null")
	c1 := benchGit(b, bare, "commit-tree", "-m", "one", tree)
	c2 := benchGit(b, bare, "commit-tree", "-m", "two", "-p", c1, tree)
	var in strings.Builder
	fmt.Fprintf(&in, "create refs/heads/main %s\n", c2)
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
	cmd.Dir, cmd.Stdin = bare, strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("update-ref --stdin: %v\n%s", err, out)
	}
	// Annotated tags through fast-import: one process for all of them.
	var fi strings.Builder
	for i := 0; i < n; i += 100 {
		fmt.Fprintf(&fi, "tag v%06d\nfrom %s\ntagger B <b@example.com> 1767225600 +0000\ndata 7\nrelease\n", i, c2)
	}
	cmd = exec.Command("git", "fast-import", "--quiet")
	cmd.Dir, cmd.Stdin = bare, strings.NewReader(fi.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("fast-import: %v\n%s", err, out)
	}
	benchGit(b, bare, "pack-refs", "--all")
	return bare
}

// benchSeed reads the repository's state as `refcast sync` publishes it:
// every ref, the peel of every annotated tag, HEAD's target.
func benchSeed(b *testing.B, bare string) *bus.Push {
	out := benchGit(b, bare, "for-each-ref", "--format=%(objectname) %(refname) %(*objectname)", "refs/")
	p := &bus.Push{ID: "seed", Repo: "big", Time: time.Now(), Source: "sync", Seed: true,
		Head: benchGit(b, bare, "symbolic-ref", "HEAD")}
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		u := bus.RefUpdate{Ref: f[1], New: f[0]}
		if len(f) == 3 {
			u.Peeled = f[2]
		}
		p.Updates = append(p.Updates, u)
	}
	return p
}

func benchGit(b *testing.B, dir string, args ...string) string {
	b.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=B", "GIT_AUTHOR_EMAIL=b@example.com", "GIT_COMMITTER_NAME=B", "GIT_COMMITTER_EMAIL=b@example.com",
		"GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// recorded is one request git sent: what a replay needs to send it again.
type recorded struct {
	method, path string // path with its query
	header       http.Header
	body         []byte
}

// recorder passes requests to next and, while recording, keeps them.
type recorder struct {
	mu   sync.Mutex // guards the fields below
	next http.Handler
	reqs []recorded
	on   bool
}

func (r *recorder) setNext(h http.Handler) {
	r.mu.Lock()
	r.next = h
	r.mu.Unlock()
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	next := r.next
	if r.on {
		hdr := http.Header{}
		for _, k := range []string{"Git-Protocol", "Content-Type", "Accept"} {
			if v := req.Header.Get(k); v != "" {
				hdr.Set(k, v)
			}
		}
		r.reqs = append(r.reqs, recorded{req.Method, req.URL.RequestURI(), hdr, body})
	}
	r.mu.Unlock()
	next.ServeHTTP(w, req)
}

func (r *recorder) record(run func()) []recorded {
	r.mu.Lock()
	r.reqs, r.on = nil, true
	r.mu.Unlock()
	run()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return r.reqs
}

// withoutPrefix maps refcast's /git/big.git paths to http-backend's
// /big.git.
func withoutPrefix(reqs []recorded) []recorded {
	out := make([]recorded, len(reqs))
	for i, r := range reqs {
		r.path = strings.TrimPrefix(r.path, "/git")
		out[i] = r
	}
	return out
}

// cost is what answering one operation took on the server.
type cost struct {
	cpu, wall time.Duration
	bytes     int64
}

func (c *cost) add(d cost) { c.cpu += d.cpu; c.wall += d.wall; c.bytes += d.bytes }

func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// replay sends the requests one after the other and measures them.
func replay(b *testing.B, base string, reqs []recorded) cost {
	b.Helper()
	self, kids, start := cpuTime(syscall.RUSAGE_SELF), cpuTime(syscall.RUSAGE_CHILDREN), time.Now()
	var n int64
	for _, r := range reqs {
		req, err := http.NewRequest(r.method, base+r.path, bytes.NewReader(r.body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header = r.header.Clone()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		m, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			b.Fatalf("%s %s: %d, %v", r.method, r.path, res.StatusCode, err)
		}
		n += m
	}
	wall := time.Since(start)
	cpu := cpuTime(syscall.RUSAGE_SELF) - self + cpuTime(syscall.RUSAGE_CHILDREN) - kids
	return cost{cpu: cpu, wall: wall, bytes: n}
}

// checkOnlyPrefixes fails the benchmark unless refcast's ls-refs answer
// holds only refs under the ref-prefixes git asked for.
func checkOnlyPrefixes(b *testing.B, base string, reqs []recorded) {
	b.Helper()
	for _, r := range reqs {
		if r.method != http.MethodPost {
			continue
		}
		var prefixes []string
		for _, line := range dataPkts(r.body) {
			if p, ok := strings.CutPrefix(line, "ref-prefix "); ok {
				prefixes = append(prefixes, p)
			}
		}
		req, _ := http.NewRequest(r.method, base+r.path, bytes.NewReader(r.body))
		req.Header = r.header.Clone()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		ans, _ := io.ReadAll(res.Body)
		res.Body.Close()
		refs := 0
		for _, line := range dataPkts(ans) {
			f := strings.Fields(string(line))
			if len(f) < 2 {
				continue
			}
			refs++
			ok := false
			for _, p := range prefixes {
				ok = ok || strings.HasPrefix(f[1], p)
			}
			if !ok {
				b.Fatalf("ls-refs with prefixes %q answered %q", prefixes, line)
			}
		}
		if refs == 0 {
			b.Fatalf("ls-refs with prefixes %q answered no ref", prefixes)
		}
	}
}

// dataPkts returns the payloads of the data packets in b, without their
// newlines, up to the end or the first malformed packet.
func dataPkts(b []byte) []string {
	var out []string
	pr := NewPktReader(bytes.NewReader(b))
	for {
		k, data, err := pr.Next()
		if err != nil {
			return out
		}
		if k == Data {
			out = append(out, strings.TrimSuffix(string(data), "\n"))
		}
	}
}
