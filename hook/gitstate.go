package hook

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/refcast/refcast/bus"
)

// What a git client's ref advertisement needs besides the refs: HEAD's
// symbolic target and every annotated tag's peeled object. Both go out with
// every push and every seed (bus.Push.Head, bus.RefUpdate.Peeled), read
// here independently of the enrichment budget, because a node answers
// `git ls-remote` from them (see bus.GitFields).

// Head returns HEAD's symbolic target ("refs/heads/main"), or "" when HEAD
// is detached or cannot be read. It reads the HEAD file (git writes it as
// "ref: <target>"), and asks git only when that file does not name a
// target, as with the reftable backend whose HEAD file is a stub.
func (r *Repo) Head(ctx context.Context) string {
	if b, err := os.ReadFile(filepath.Join(r.GitDir, "HEAD")); err == nil {
		line := strings.TrimSpace(string(b))
		if t, ok := strings.CutPrefix(line, "ref: "); ok && t != "refs/heads/.invalid" {
			if bus.ValidateRef(t) == nil {
				return t
			}
			return ""
		}
		if bus.ValidateObjectID(line) == nil {
			return "" // detached
		}
	}
	out, err := r.run(ctx, nil, "symbolic-ref", "-q", "HEAD")
	if t := strings.TrimSpace(string(out)); err == nil && bus.ValidateRef(t) == nil {
		return t
	}
	return ""
}

// Peel sets Peeled on every update whose new object is an annotated tag, to
// the object the tag finally points at (as git's "^{}" lines). Updates
// whose Commit enrichment filled are skipped: enrichment peeled them to a
// commit already. Everything left is asked of one `git cat-file
// --batch-check` (two lines per object: the object and its "^{}"), which
// costs a process start and no object content. It returns an error when
// some object could not be read: the push must then not claim its peels
// are complete.
func (r *Repo) Peel(ctx context.Context, ups []bus.RefUpdate) error {
	var idx []int
	var req bytes.Buffer
	for i, u := range ups {
		if bus.IsZeroID(u.New) || u.Commit != nil {
			continue
		}
		idx = append(idx, i)
		fmt.Fprintf(&req, "%s\n%s^{}\n", u.New, u.New)
	}
	if len(idx) == 0 {
		return nil
	}
	out, err := r.run(ctx, req.Bytes(), "cat-file", "--batch-check=%(objectname) %(objecttype)")
	if err != nil {
		return fmt.Errorf("peel tags: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	next := func() (id, typ string, ok bool) {
		if !sc.Scan() {
			return "", "", false
		}
		id, typ, _ = strings.Cut(sc.Text(), " ")
		return id, typ, typ != "missing" && bus.ValidateObjectID(id) == nil
	}
	for _, i := range idx {
		_, typ, ok1 := next()
		peeled, _, ok2 := next()
		if !ok1 || !ok2 {
			return fmt.Errorf("peel tags: cannot read %s (%s)", ups[i].New, ups[i].Ref)
		}
		if typ == "tag" {
			ups[i].Peeled = peeled
		}
	}
	return nil
}

// gitState fills the pushes' Head, when HEAD and every peel could be read;
// otherwise it leaves Head empty so the node marks the state incomplete
// (and proxies git clients) rather than advertise a wrong one.
func (r *Runner) gitState(ctx context.Context, repo *Repo, ups []bus.RefUpdate) string {
	if err := repo.Peel(ctx, ups); err != nil {
		r.warnf("warning: %v; git clients of this repository will be proxied to the git server until the next push or sync", err)
		return ""
	}
	return repo.Head(ctx)
}
