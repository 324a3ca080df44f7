package hook

import (
	"bytes"
	"compress/zlib"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// countingSource counts what reaches it.
type countingSource struct {
	objectSource
	asked []string
}

func (c *countingSource) object(ctx context.Context, id string) (string, []byte, error) {
	c.asked = append(c.asked, id)
	return c.objectSource.object(ctx, id)
}

// TestLooseSourceLikeCatFile: loose objects read directly equal what git
// cat-file gives (type and content, a big message cut at maxObjectRead
// alike), in SHA-1 and SHA-256 repositories; packed objects, and a damaged
// loose file, go to the next source.
func TestLooseSourceLikeCatFile(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"sha1", "sha256"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			bare, wc := newRepos(t, "--object-format="+format)
			gitIn(t, wc, strings.Repeat("a long message line\n", 5000), "commit", "-q", "--allow-empty", "-F", "-")
			git(t, wc, "tag", "-a", "-m", "a tag", "v1")
			git(t, wc, "push", "-q", "origin", "main", "v1")
			r := openRepo(t, bare)
			ctx := context.Background()
			ids := []string{
				git(t, bare, "rev-parse", "main"), git(t, bare, "rev-parse", "main^"),
				git(t, bare, "rev-parse", "v1"), git(t, bare, "rev-parse", "main^{tree}"),
			}
			cat := &catFileSource{repo: r}
			defer cat.close()
			next := &countingSource{objectSource: &catFileSource{repo: r}}
			loose := &looseSource{dir: filepath.Join(r.CommonDir, "objects"), next: next}
			defer loose.close()
			for _, id := range ids {
				wt, wd, err := cat.object(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				gt, gd, err := loose.object(ctx, id)
				if err != nil || gt != wt || string(gd) != string(wd) {
					t.Errorf("%s: loose read %q, %d bytes, %v; cat-file %q, %d bytes", id, gt, len(gd), err, wt, len(wd))
				}
			}
			if len(next.asked) != 0 {
				t.Errorf("loose objects asked of the next source: %v", next.asked)
			}
			got := objects(ctx, loose, ids)
			for _, id := range ids {
				if o := got[id]; o.err != nil || o.typ == "" {
					t.Errorf("batch %s: %+v", id, o)
				}
			}

			// Packed: every object goes to the next source.
			git(t, bare, "repack", "-q", "-a", "-d")
			git(t, bare, "prune-packed")
			for _, id := range ids {
				if _, _, err := loose.object(ctx, id); err != nil {
					t.Errorf("packed %s: %v", id, err)
				}
			}
			if len(next.asked) != len(ids) {
				t.Errorf("packed objects asked of the next source: %v, want all %d", next.asked, len(ids))
			}

			// A damaged loose file is not believed: the next source answers.
			next.asked = nil
			commit := ids[0]
			path := filepath.Join(r.CommonDir, "objects", commit[:2], commit[2:])
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("not zlib"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, _, err := loose.object(ctx, commit); err != nil || len(next.asked) != 1 {
				t.Errorf("damaged loose file: err %v, next asked %v", err, next.asked)
			}
		})
	}
}

// FuzzLooseObject: whatever a loose object file holds (compressed or not),
// reading it never panics, and what it accepts has a known type and at
// most maxObjectRead bytes.
func FuzzLooseObject(f *testing.F) {
	for _, seed := range [][]byte{
		zlibBytes("commit 3\x00abc"), zlibBytes("blob 0\x00"), zlibBytes("tag 99999999999999999999\x00x"),
		zlibBytes("nonsense\x00"), []byte("not zlib at all"), {},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		id := strings.Repeat("ab", 20)
		if err := os.MkdirAll(filepath.Join(dir, id[:2]), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, data := range [][]byte{content, zlibBytes(string(content))} {
			if err := os.WriteFile(filepath.Join(dir, id[:2], id[2:]), data, 0o644); err != nil {
				t.Fatal(err)
			}
			typ, got, ok := (&looseSource{dir: dir}).loose(id)
			if !ok {
				continue
			}
			switch typ {
			case "commit", "tag", "tree", "blob":
			default:
				t.Fatalf("accepted type %q", typ)
			}
			if len(got) > maxObjectRead {
				t.Fatalf("read %d bytes, more than %d", len(got), maxObjectRead)
			}
		}
	})
}

func zlibBytes(s string) []byte {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.Bytes()
}
