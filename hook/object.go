package hook

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/refcast/refcast/bus"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// maxObjectRead bounds how much of a commit or tag object is read: the
// headers and the subject live at the start; a huge message is cut.
const maxObjectRead = 64 << 10

// errMissing means the object is not in the repository.
var errMissing = errors.New("object not found")

// objectSource reads raw commit and tag objects. Not safe for concurrent use.
type objectSource interface {
	// object returns the type ("commit", "tag", "tree", "blob") and up to
	// maxObjectRead bytes of the object's content.
	object(ctx context.Context, id string) (typ string, data []byte, err error)
	close() error
}

// goGitSource reads objects in-process with go-git, alternates included
// (objects/info/alternates with absolute paths; forks on hosting sites use
// them). go-git v5 is built for SHA-1 only, so it serves SHA-1 repositories.
type goGitSource struct {
	st *filesystem.Storage
}

func newGoGitSource(commonDir string) *goGitSource {
	st := filesystem.NewStorageWithOptions(osfs.New(commonDir), cache.NewObjectLRU(cache.MiByte), filesystem.Options{
		// Absolute alternate paths are resolved from the real root.
		AlternatesFS: osfs.New("/"),
	})
	return &goGitSource{st: st}
}

func (s *goGitSource) object(_ context.Context, id string) (string, []byte, error) {
	if len(id) != 40 {
		return "", nil, fmt.Errorf("go-git reads SHA-1 objects only, got %q", id)
	}
	o, err := s.st.EncodedObject(plumbing.AnyObject, plumbing.NewHash(id))
	if err != nil {
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return "", nil, fmt.Errorf("%s: %w", id, errMissing)
		}
		return "", nil, err
	}
	r, err := o.Reader()
	if err != nil {
		return "", nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxObjectRead))
	return o.Type().String(), data, err
}

func (s *goGitSource) close() error { return s.st.Close() }

// catFileSource reads objects through one `git cat-file --batch` process:
// any object format, any alternates layout git understands.
type catFileSource struct {
	repo *Repo
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	err  error // sticky: once the stream is broken, every read fails
}

func (s *catFileSource) start(ctx context.Context) error {
	if s.cmd != nil || s.err != nil {
		return s.err
	}
	cmd := exec.CommandContext(ctx, s.repo.Git, "--git-dir="+s.repo.GitDir, "cat-file", "--batch")
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		s.err = fmt.Errorf("start git cat-file: %w", err)
		return s.err
	}
	s.cmd, s.in, s.out = cmd, in, bufio.NewReaderSize(out, 64<<10)
	return nil
}

// rawObject is one object read in a batch.
type rawObject struct {
	typ  string
	data []byte
	err  error
}

// objects reads many objects. Sources that can pipeline (git cat-file)
// do; others read one by one. It stops early when ctx ends; ids not read
// are absent from the map.
func objects(ctx context.Context, src objectSource, ids []string) map[string]rawObject {
	if b, ok := src.(interface {
		batch(context.Context, []string) map[string]rawObject
	}); ok {
		return b.batch(ctx, ids)
	}
	out := make(map[string]rawObject, len(ids))
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		typ, data, err := src.object(ctx, id)
		if err != nil && ctx.Err() != nil {
			break
		}
		out[id] = rawObject{typ, data, err}
	}
	return out
}

// batch writes every request before reading the answers (from a goroutine,
// so neither side blocks on a full pipe): one round trip for the lot.
func (s *catFileSource) batch(ctx context.Context, ids []string) map[string]rawObject {
	out := make(map[string]rawObject, len(ids))
	if err := s.start(ctx); err != nil {
		return out
	}
	var req strings.Builder
	for _, id := range ids {
		if strings.ContainsAny(id, " \n") {
			out[id] = rawObject{err: fmt.Errorf("bad object id %q", id)}
			continue
		}
		req.WriteString(id + "\n")
	}
	werr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(s.in, req.String())
		werr <- err
	}()
	for _, id := range ids {
		if _, done := out[id]; done {
			continue
		}
		typ, data, err := s.readAnswer(id)
		if err != nil && !errors.Is(err, errMissing) {
			s.err = err
			s.in.Close() // unblocks the writer
			break
		}
		out[id] = rawObject{typ, data, err}
	}
	if err := <-werr; err != nil && s.err == nil {
		s.err = err
	}
	return out
}

func (s *catFileSource) object(ctx context.Context, id string) (string, []byte, error) {
	if err := s.start(ctx); err != nil {
		return "", nil, err
	}
	typ, data, err := s.read(id)
	if err != nil && !errors.Is(err, errMissing) {
		s.err = err
		if ctx.Err() != nil {
			s.err = ctx.Err()
		}
		return "", nil, s.err
	}
	return typ, data, err
}

func (s *catFileSource) read(id string) (string, []byte, error) {
	if strings.ContainsAny(id, " \n") {
		return "", nil, fmt.Errorf("bad object id %q", id)
	}
	if _, err := io.WriteString(s.in, id+"\n"); err != nil {
		return "", nil, fmt.Errorf("git cat-file: %w", err)
	}
	return s.readAnswer(id)
}

func (s *catFileSource) readAnswer(id string) (string, []byte, error) {
	head, err := s.out.ReadString('\n')
	if err != nil {
		return "", nil, fmt.Errorf("git cat-file: %w", err)
	}
	f := strings.Fields(head)
	if len(f) == 2 && f[1] == "missing" {
		return "", nil, fmt.Errorf("%s: %w", id, errMissing)
	}
	if len(f) != 3 {
		return "", nil, fmt.Errorf("git cat-file: unexpected header %q", head)
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return "", nil, fmt.Errorf("git cat-file: unexpected header %q", head)
	}
	keep := min(size, maxObjectRead)
	data := make([]byte, keep)
	if _, err := io.ReadFull(s.out, data); err != nil {
		return "", nil, fmt.Errorf("git cat-file: %w", err)
	}
	if _, err := s.out.Discard(int(size - keep + 1)); err != nil { // the rest and the LF
		return "", nil, fmt.Errorf("git cat-file: %w", err)
	}
	return f[1], data, nil
}

func (s *catFileSource) close() error {
	if s.cmd == nil {
		return nil
	}
	s.in.Close()
	err := s.cmd.Wait()
	s.cmd = nil
	return err
}

// fallbackSource asks primary first and, for every object it fails to
// read for a reason other than the deadline, asks secondary, which is
// started only when first needed.
type fallbackSource struct {
	primary, secondary objectSource
}

func (s *fallbackSource) object(ctx context.Context, id string) (string, []byte, error) {
	typ, data, err := s.primary.object(ctx, id)
	if err == nil || ctx.Err() != nil {
		return typ, data, err
	}
	return s.secondary.object(ctx, id)
}

func (s *fallbackSource) batch(ctx context.Context, ids []string) map[string]rawObject {
	out := objects(ctx, s.primary, ids)
	for _, id := range ids {
		if o, ok := out[id]; (!ok || o.err != nil) && ctx.Err() == nil {
			typ, data, err := s.secondary.object(ctx, id)
			out[id] = rawObject{typ, data, err}
		}
	}
	return out
}

func (s *fallbackSource) close() error {
	return errors.Join(s.primary.close(), s.secondary.close())
}

// commitInfo is what enrichment takes from a commit object.
type commitInfo struct {
	parents []string
	author  string // name only: no e-mail address leaves the server
	time    time.Time
	subject string
}

// parseCommit reads a raw commit object: headers up to the first blank
// line, then the message, whose first paragraph's first line is the
// subject. Unknown headers (gpgsig, encoding, mergetag with continuation
// lines) are skipped.
func parseCommit(data []byte) (commitInfo, error) {
	var c commitInfo
	head, msg, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		head = data
	}
	sawTree := false
	for line := range strings.SplitSeq(string(head), "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "tree":
			sawTree = true
		case "parent":
			c.parents = append(c.parents, v)
		case "author":
			c.author, _ = parseSignature(v)
		case "committer":
			_, c.time = parseSignature(v)
		}
	}
	if !sawTree {
		return c, errors.New("not a commit: no tree header")
	}
	c.subject = subject(msg)
	return c, nil
}

// parseSignature splits "Name <email> 1700000000 +0100".
func parseSignature(v string) (name string, t time.Time) {
	lt := strings.LastIndexByte(v, '<')
	gt := strings.LastIndexByte(v, '>')
	if lt < 0 || gt < lt {
		return strings.TrimSpace(v), time.Time{}
	}
	name = strings.TrimSpace(v[:lt])
	f := strings.Fields(v[gt+1:])
	if len(f) >= 1 {
		if sec, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			t = time.Unix(sec, 0).UTC()
			if len(f) >= 2 {
				if tz, err := time.Parse("-0700", f[1]); err == nil {
					t = t.In(tz.Location())
				}
			}
		}
	}
	return name, t
}

// subject is the first line of the message, trimmed and cut to
// bus.MaxSubjectLen at a rune boundary.
func subject(msg []byte) string {
	s := strings.TrimLeft(string(msg), "\n")
	s, _, _ = strings.Cut(s, "\n")
	s = strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD")
	return bus.Cut(s, 1024)
}

// parseTagTarget returns the object an annotated tag points at and its type.
func parseTagTarget(data []byte) (id, typ string, err error) {
	head, _, _ := bytes.Cut(data, []byte("\n\n"))
	for line := range strings.SplitSeq(string(head), "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "object":
			id = v
		case "type":
			typ = v
		}
	}
	if id == "" {
		return "", "", errors.New("not a tag: no object header")
	}
	return id, typ, nil
}
