package hook

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/refcast/refcast/bus"
)

// HoldsOnly reports whether ups, all creations, are every ref the
// repository has: a new repository's first push. The hook then marks its
// push whole (bus.Push.Whole), which completes the repo's state for git
// clients with no seed and no extra event.
//
// It looks at the ref files themselves rather than listing refs, and gives
// up at the first sign of anything else, so a push to a big repository
// (whose refs are packed) costs one failed stat-and-read of packed-refs's
// first line: a push creating one branch in a 100,000-ref repository must
// not pay a listing of 100,000 refs. Anything it does not understand (a
// reftable, a symbolic ref, a lock file of a concurrent update) answers
// false: the next step, a seed, is always correct, just not free.
func (r *Repo) HoldsOnly(ups []bus.RefUpdate) bool {
	if len(ups) == 0 {
		return false
	}
	want := make(map[string]string, len(ups))
	for _, u := range ups {
		if !bus.IsZeroID(u.Old) || bus.IsZeroID(u.New) {
			return false
		}
		want[u.Ref] = u.New
	}
	if _, err := os.Stat(filepath.Join(r.CommonDir, "reftable")); err == nil {
		return false
	}
	if packedRefsHoldAny(filepath.Join(r.CommonDir, "packed-refs")) {
		return false
	}
	seen := 0
	ok := true
	root := filepath.Join(r.CommonDir, "refs")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(r.CommonDir, path)
		if err != nil {
			return err
		}
		id, known := want[filepath.ToSlash(rel)]
		if !known || !d.Type().IsRegular() {
			ok = false
			return fs.SkipAll
		}
		b, err := os.ReadFile(path)
		if err != nil || strings.TrimSpace(string(b)) != id {
			ok = false
			return fs.SkipAll
		}
		seen++
		return nil
	})
	return err == nil && ok && seen == len(want)
}

// packedRefsHoldAny reports whether a packed-refs file lists a ref (or
// cannot be read: then it may). Its header is a comment; any other line is
// a ref or a peel, so one line past the header settles it.
func packedRefsHoldAny(path string) bool {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return false
	}
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			return true
		}
	}
	return sc.Err() != nil
}
