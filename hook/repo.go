package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/refcast/refcast/bus"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultGit is the git binary used when Repo.Git is empty.
const DefaultGit = "git"

// Repo is the repository a hook runs in, as git itself resolves it (GIT_DIR
// or the working directory; bare or not; a linked worktree resolves to its
// common directory for everything shared).
//
// A Repo is safe for concurrent use; its fields are set by OpenRepo and not
// changed afterwards.
type Repo struct {
	// GitDir is the absolute git directory; in a linked worktree, the
	// worktree's private one.
	GitDir string
	// CommonDir is the absolute directory holding objects, refs, config and
	// hooks (equal to GitDir outside linked worktrees).
	CommonDir string
	// Path names the repository on disk: CommonDir for a bare repository,
	// the work tree for "<worktree>/.git". Repo names are derived from it.
	Path string
	// ObjectFormat is "sha1" or "sha256".
	ObjectFormat string
	// Git is the git binary.
	Git string
}

// OpenRepo asks git which repository dir belongs to. dir may be "" for the
// working directory; GIT_DIR in the process environment is honoured, as in
// any git command. gitBin may be "" for DefaultGit.
func OpenRepo(ctx context.Context, dir, gitBin string) (*Repo, error) {
	if gitBin == "" {
		gitBin = DefaultGit
	}
	args := []string{"rev-parse", "--path-format=absolute", "--absolute-git-dir", "--git-common-dir", "--show-object-format"}
	cmd := exec.CommandContext(ctx, gitBin, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("find repository in %q: %w: %s", dir, err, firstLine(stderr.String()))
	}
	f := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(f) != 3 {
		return nil, fmt.Errorf("find repository in %q: unexpected git rev-parse output %q", dir, out)
	}
	return newRepo(f[0], filepath.Clean(f[1]), f[2], gitBin), nil
}

// newRepo fills in Path: the work tree for "<worktree>/.git", else the
// common directory.
func newRepo(gitDir, commonDir, objectFormat, gitBin string) *Repo {
	r := &Repo{GitDir: gitDir, CommonDir: commonDir, ObjectFormat: objectFormat, Git: gitBin}
	r.Path = r.CommonDir
	if filepath.Base(r.CommonDir) == ".git" {
		r.Path = filepath.Dir(r.CommonDir)
	}
	return r
}

// run runs git on the repository and returns its standard output. The
// error carries the first line of git's standard error.
func (r *Repo) run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.Git, append([]string{"--git-dir=" + r.GitDir}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		return out, &gitError{args: args, err: err, stderr: firstLine(stderr.String())}
	}
	return out, nil
}

type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	s := fmt.Sprintf("git %s: %v", strings.Join(e.args, " "), e.err)
	if e.stderr != "" {
		s += ": " + e.stderr
	}
	return s
}

func (e *gitError) Unwrap() error { return e.err }

// exitCode is git's exit status, or -1 if it did not exit normally.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Config is the repository's refcast.* git configuration (every scope git
// reads: system, global, repository), keyed by the lowercased name without
// the "refcast." prefix ("url", "repomap"). Multi-valued keys keep every
// value in order.
type Config map[string][]string

// Get returns the last value of key, as git does, or "".
func (c Config) Get(key string) string {
	v := c[strings.ToLower(key)]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// Config reads the refcast.* git configuration with one git call.
func (r *Repo) Config(ctx context.Context) (Config, error) {
	return r.readConfig(ctx)
}

// readConfig reads refcast.* with `git config -z --get-regexp`, limited to
// one file by scope ("--local") when given.
func (r *Repo) readConfig(ctx context.Context, scope ...string) (Config, error) {
	args := append([]string{"config"}, scope...)
	out, err := r.run(ctx, nil, append(args, "-z", "--get-regexp", `^refcast\.`)...)
	if err != nil {
		if exitCode(err) == 1 { // no such keys
			return Config{}, nil
		}
		return nil, fmt.Errorf("read git config: %w", err)
	}
	c := Config{}
	for entry := range strings.SplitSeq(string(out), "\x00") {
		if entry == "" {
			continue
		}
		k, v, _ := strings.Cut(entry, "\n")
		k = strings.TrimPrefix(strings.ToLower(k), "refcast.")
		c[k] = append(c[k], v)
	}
	return c, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return bus.Clip(s, 80)
}
