package hook

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/refcast/refcast/bus"
)

// bigRepo is a bare repository with a linear main of 100,000 commits and a
// branch "fork" of one commit off the 50,000th, built once per test process
// with git fast-import, once without and once with a commit-graph. ff is
// main's parent.
type bigRepo struct {
	dir            string
	main, ff, fork string
}

var (
	bigOnce  sync.Once
	bigRepos map[bool]*bigRepo
	bigErr   error
	bigTmp   string // removed by TestMain
)

const bigCommits = 100_000

func getBigRepos(b *testing.B) map[bool]*bigRepo {
	if testing.Short() {
		b.Skip("100k-commit repository skipped in -short mode")
	}
	bigOnce.Do(func() {
		bigTmp, bigErr = os.MkdirTemp("", "refcast-bigrepo-")
		if bigErr != nil {
			return
		}
		var sb strings.Builder
		for i := range bigCommits {
			msg := fmt.Sprintf("commit %d", i)
			fmt.Fprintf(&sb, "commit refs/heads/main\nmark :%d\nauthor A <a@x> %d +0000\ncommitter A <a@x> %d +0000\ndata %d\n%s\n", i+1, 1600000000+i, 1600000000+i, len(msg), msg)
			if i > 0 {
				fmt.Fprintf(&sb, "from :%d\n", i)
			}
			fmt.Fprintf(&sb, "M 644 inline f\ndata %d\n%d\n\n", len(fmt.Sprint(i))+1, i)
		}
		fmt.Fprintf(&sb, "commit refs/heads/fork\ncommitter A <a@x> 1700000000 +0000\ndata 4\nfork\nfrom :%d\n\n", bigCommits/2)
		stream := sb.String()
		bigRepos = map[bool]*bigRepo{}
		for _, graph := range []bool{false, true} {
			dir := filepath.Join(bigTmp, fmt.Sprintf("graph-%v.git", graph))
			git(b, bigTmp, "init", "-q", "--bare", dir)
			gitIn(b, dir, stream, "fast-import", "--quiet")
			git(b, dir, "repack", "-adq")
			if graph {
				git(b, dir, "commit-graph", "write", "--reachable")
			}
			r := &bigRepo{dir: dir, main: git(b, dir, "rev-parse", "main"), ff: git(b, dir, "rev-parse", "main~1"), fork: git(b, dir, "rev-parse", "fork")}
			bigRepos[graph] = r
		}
	})
	if bigErr != nil {
		b.Fatal(bigErr)
	}
	return bigRepos
}

// BenchmarkEnrich100k enriches one update on a 100k-commit repository: a
// one-commit fast-forward and a force-push to a branch that diverged 50k
// commits back, with and without a commit-graph, under a generous budget
// so the full cost shows.
func BenchmarkEnrich100k(b *testing.B) {
	repos := getBigRepos(b)
	for _, graph := range []bool{false, true} {
		br := repos[graph]
		r := openRepo(b, br.dir)
		for _, c := range []struct {
			name string
			u    bus.RefUpdate
		}{
			{"ff", bus.RefUpdate{Ref: "refs/heads/main", Old: br.ff, New: br.main}},
			{"forced", bus.RefUpdate{Ref: "refs/heads/main", Old: br.main, New: br.fork}},
			{"create", bus.RefUpdate{Ref: "refs/heads/fork", Old: z1, New: br.fork}},
		} {
			for _, reader := range []string{"go-git", "git"} {
				b.Run(fmt.Sprintf("graph=%v/%s/%s", graph, c.name, reader), func(b *testing.B) {
					var st EnrichStats
					for b.Loop() {
						ups := []bus.RefUpdate{c.u}
						st = r.Enrich(context.Background(), ups, EnrichOptions{Budget: 10 * time.Second, ObjectReader: reader})
						if ups[0].Enriched != bus.EnrichFull {
							b.Fatalf("%+v", ups[0])
						}
					}
					b.ReportMetric(float64(st.Elapsed.Microseconds())/1000, "last-ms")
				})
			}
		}
	}
}

// BenchmarkIsAncestor compares go-git's Commit.IsAncestor with `git
// merge-base --is-ancestor` (which uses the commit-graph) on the 100k repo.
func BenchmarkIsAncestor(b *testing.B) {
	repos := getBigRepos(b)
	for _, graph := range []bool{false, true} {
		br := repos[graph]
		r := openRepo(b, br.dir)
		for _, c := range []struct {
			name, old, new string
			want           bool
		}{
			{"ff", br.ff, br.main, true},
			{"forced", br.main, br.fork, false},
		} {
			b.Run(fmt.Sprintf("git/graph=%v/%s", graph, c.name), func(b *testing.B) {
				for b.Loop() {
					_, err := r.run(context.Background(), nil, "merge-base", "--is-ancestor", c.old, c.new)
					if (err == nil) != c.want {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("go-git/graph=%v/%s", graph, c.name), func(b *testing.B) {
				repo, err := gogit.PlainOpen(br.dir)
				if err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					oc, err1 := repo.CommitObject(plumbing.NewHash(c.old))
					nc, err2 := repo.CommitObject(plumbing.NewHash(c.new))
					if err1 != nil || err2 != nil {
						b.Fatal(err1, err2)
					}
					ok, err := oc.IsAncestor(nc)
					if err != nil || ok != c.want {
						b.Fatal(ok, err)
					}
				}
			})
		}
	}
}

// BenchmarkObjectRead compares reading 1, 10 and 1000 tips (annotated tag
// to commit) in-process with go-git and pipelined through git cat-file.
func BenchmarkObjectRead(b *testing.B) {
	bare, wc := newRepos(b)
	head := git(b, wc, "rev-parse", "HEAD")
	var sb strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&sb, "tag t%04d\nfrom %s\ntagger T <t@x> 1700000000 +0000\ndata 1\nx\n", i, head)
	}
	gitIn(b, bare, sb.String(), "fast-import", "--quiet")
	var all []bus.RefUpdate
	for line := range strings.SplitSeq(git(b, bare, "for-each-ref", "--format=%(objectname) %(refname)", "refs/tags/"), "\n") {
		id, ref, _ := strings.Cut(line, " ")
		all = append(all, bus.RefUpdate{Ref: ref, Old: z1, New: id})
	}
	r := openRepo(b, bare)
	for _, n := range []int{1, 10, 1000} {
		for _, reader := range []string{"go-git", "git", "auto"} {
			b.Run(fmt.Sprintf("n=%d/%s", n, reader), func(b *testing.B) {
				for b.Loop() {
					ups := append([]bus.RefUpdate(nil), all[:n]...)
					if st := r.Enrich(context.Background(), ups, EnrichOptions{Budget: 10 * time.Second, ObjectReader: reader}); st.Full != n {
						b.Fatalf("%+v", st)
					}
				}
			})
		}
	}
}
