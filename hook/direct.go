package hook

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A hook learns its repository and configuration here by reading what git
// hands it (GIT_DIR) and the files git reads, rather than asking git: each
// git process costs a push 7-10 ms on a 2-core machine, and a hook used to
// start two just for this (rev-parse, then config). Whatever this code is
// not sure of, git answers instead: errAskGit says so, and the caller runs
// the git command it always ran (OpenRepo, Repo.Config).

// errAskGit wraps every reason the direct reading declines.
var errAskGit = errors.New("ask git")

func askGit(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errAskGit, fmt.Sprintf(format, args...))
}

// maxConfigFile bounds one config file read directly; a larger one is
// left to git. A hand-written config is a few KB; 1 MiB is far beyond
// that and still reads in well under a millisecond.
const maxConfigFile = 1 << 20

// openRepoDirect is OpenRepo for a hook, without git rev-parse. git sets
// GIT_DIR for every hook it runs from a push and in linked worktrees (git
// 2.39: "." with the repository as working directory for post-receive and
// reference-transaction in receive-pack, an absolute path in a linked
// worktree); without it (a commit in a main worktree) it declines. The
// directories are resolved to real paths, as rev-parse --path-format=absolute
// prints them, so repo names derived from Path are the same either way.
func openRepoDirect(lookup func(string) (string, bool), gitBin string) (*Repo, error) {
	gitDir, _ := lookup("GIT_DIR")
	if gitDir == "" {
		return nil, askGit("GIT_DIR is not set")
	}
	gitDir, err := realDir(gitDir)
	if err != nil {
		return nil, askGit("GIT_DIR: %v", err)
	}
	// A git directory has HEAD (a file, or a symbolic link in very old
	// repositories); anything else is not for this code to judge.
	if _, err := os.Lstat(filepath.Join(gitDir, "HEAD")); err != nil {
		return nil, askGit("GIT_DIR %s: %v", gitDir, err)
	}
	commonDir, err := commonDirOf(lookup, gitDir)
	if err != nil {
		return nil, err
	}
	vars, err := readConfigFile(filepath.Join(commonDir, "config"))
	if err != nil {
		return nil, err
	}
	if vars == nil {
		return nil, askGit("%s has no config file", commonDir)
	}
	f, err := repoFormatOf(vars)
	if err != nil {
		return nil, err
	}
	return newRepo(gitDir, commonDir, f.objectFormat, gitBin), nil
}

// realDir makes dir absolute (relative to the working directory, as git
// takes GIT_DIR) and resolves symbolic links; it must be a directory.
func realDir(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(wd, dir)
	}
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(dir); err != nil {
		return "", err
	} else if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return dir, nil
}

// commonDirOf is git's get_common_dir: GIT_COMMON_DIR if set, else the
// path in gitDir/commondir (a linked worktree's; relative to gitDir), else
// gitDir itself.
func commonDirOf(lookup func(string) (string, bool), gitDir string) (string, error) {
	if d, ok := lookup("GIT_COMMON_DIR"); ok {
		if d == "" {
			return "", askGit("GIT_COMMON_DIR is empty")
		}
		d, err := realDir(d)
		if err != nil {
			return "", askGit("GIT_COMMON_DIR: %v", err)
		}
		return d, nil
	}
	data, err := os.ReadFile(filepath.Join(gitDir, "commondir"))
	if errors.Is(err, fs.ErrNotExist) {
		return gitDir, nil
	}
	if err != nil {
		return "", askGit("%v", err)
	}
	d := strings.TrimRight(string(data), "\r\n")
	if d == "" {
		return "", askGit("%s/commondir is empty", gitDir)
	}
	if !filepath.IsAbs(d) {
		d = filepath.Join(gitDir, d)
	}
	if d, err = realDir(d); err != nil {
		return "", askGit("%s/commondir: %v", gitDir, err)
	}
	return d, nil
}

// repoFormat is what a repository's config says about reading it.
type repoFormat struct {
	objectFormat   string // "sha1" or "sha256"
	worktreeConfig bool   // extensions.worktreeConfig: read config.worktree too
}

// repoFormatOf reads core.repositoryformatversion and extensions.* from
// the common directory's config as git's check_repo_format does. Only the
// extensions this code understands are accepted (objectFormat,
// worktreeConfig); any other, a format version other than 0 or 1, an
// object format in a version 0 repository (git 2.39 refuses it) or a value
// git would not parse declines.
func repoFormatOf(vars []configVar) (repoFormat, error) {
	f := repoFormat{objectFormat: "sha1"}
	version, objectFormat := 0, ""
	for _, v := range vars {
		switch {
		case v.Name == "core.repositoryformatversion":
			n, err := strconv.Atoi(v.Value)
			if v.NoValue || err != nil || n < 0 || n > 1 {
				return f, askGit("core.repositoryformatversion %q", v.Value)
			}
			version = n
		case v.Name == "extensions.objectformat":
			if v.NoValue || v.Value != "sha1" && v.Value != "sha256" {
				return f, askGit("extensions.objectformat %q", v.Value)
			}
			objectFormat = v.Value
		case v.Name == "extensions.worktreeconfig":
			b, ok := parseGitBool(v.Value, v.NoValue)
			if !ok {
				return f, askGit("extensions.worktreeconfig %q", v.Value)
			}
			f.worktreeConfig = b
		case strings.HasPrefix(v.Name, "extensions."):
			return f, askGit("%s", v.Name)
		}
	}
	if objectFormat != "" {
		if version == 0 {
			return f, askGit("extensions.objectformat in a version 0 repository")
		}
		f.objectFormat = objectFormat
	}
	return f, nil
}

// parseGitBool parses the booleans git writes and people type: true, yes,
// on, 1, and a key without a value are true; false, no, off, 0 and the
// empty string false (case-insensitive). Other numbers and anything else
// git might read some other way are not ok.
func parseGitBool(s string, noValue bool) (b, ok bool) {
	if noValue {
		return true, true
	}
	switch strings.ToLower(s) {
	case "true", "yes", "on", "1":
		return true, true
	case "false", "no", "off", "0", "":
		return false, true
	}
	return false, false
}

// readConfigFile parses one config file; nil, nil when it does not exist.
// One that cannot be read or parsed or is larger than maxConfigFile
// declines. Includes are the caller's to judge: the repository format
// ignores them, git config follows them.
func readConfigFile(path string) ([]configVar, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, askGit("%v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, askGit("%v", err)
	}
	if len(data) > maxConfigFile {
		return nil, askGit("%s is larger than %d bytes", path, maxConfigFile)
	}
	vars, err := parseGitConfig(data)
	if err != nil {
		return nil, askGit("%s: %v", path, err)
	}
	if vars == nil {
		vars = []configVar{}
	}
	return vars, nil
}

// configFiles lists the files git config reads, in its order (system,
// global: XDG then ~/.gitconfig, local, worktree), or declines when the
// environment asks for something else: GIT_CONFIG (one file only),
// GIT_CONFIG_PARAMETERS or GIT_CONFIG_COUNT (git -c and its environment
// form), a relative or empty path, a system file whose location this code
// cannot know. Files that do not exist are skipped later, as git does.
func configFiles(lookup func(string) (string, bool), r *Repo, worktreeConfig bool) ([]string, error) {
	for _, name := range []string{"GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT"} {
		if _, ok := lookup(name); ok {
			return nil, askGit("%s is set", name)
		}
	}
	var files []string
	system, err := systemConfig(lookup)
	if err != nil {
		return nil, err
	}
	if system != "" {
		files = append(files, system)
	}
	if g, ok := lookup("GIT_CONFIG_GLOBAL"); ok {
		// Set but empty: git reads no global file (checked with git 2.39).
		if g != "" && !filepath.IsAbs(g) {
			return nil, askGit("GIT_CONFIG_GLOBAL %q is relative", g)
		}
		if g != "" {
			files = append(files, g)
		}
	} else {
		home, hasHome := lookup("HOME")
		if hasHome && !filepath.IsAbs(home) {
			return nil, askGit("HOME %q is not absolute", home)
		}
		if xdg, _ := lookup("XDG_CONFIG_HOME"); xdg != "" {
			if !filepath.IsAbs(xdg) {
				return nil, askGit("XDG_CONFIG_HOME %q is relative", xdg)
			}
			files = append(files, filepath.Join(xdg, "git", "config"))
		} else if hasHome {
			files = append(files, filepath.Join(home, ".config", "git", "config"))
		}
		if hasHome {
			files = append(files, filepath.Join(home, ".gitconfig"))
		}
	}
	files = append(files, filepath.Join(r.CommonDir, "config"))
	if worktreeConfig {
		files = append(files, filepath.Join(r.GitDir, "config.worktree"))
	}
	return files, nil
}

// systemConfig is the system-wide config file git reads, "" for none:
// none with GIT_CONFIG_NOSYSTEM true, else GIT_CONFIG_SYSTEM, else the
// file compiled into git: /etc/gitconfig for a git built with prefix /usr
// (every Linux distribution's), recognised by its exec path, which git
// exports to hooks as GIT_EXEC_PATH. Any other git (built with another
// prefix: /usr/local/etc/gitconfig, Homebrew's) declines.
func systemConfig(lookup func(string) (string, bool)) (string, error) {
	if v, ok := lookup("GIT_CONFIG_NOSYSTEM"); ok {
		off, valid := parseGitBool(v, false)
		if !valid {
			return "", askGit("GIT_CONFIG_NOSYSTEM %q", v)
		}
		if off {
			return "", nil
		}
	}
	if v, ok := lookup("GIT_CONFIG_SYSTEM"); ok {
		if !filepath.IsAbs(v) {
			return "", askGit("GIT_CONFIG_SYSTEM %q is not absolute", v)
		}
		return v, nil
	}
	switch exec, _ := lookup("GIT_EXEC_PATH"); exec {
	case "/usr/lib/git-core", "/usr/libexec/git-core":
		return "/etc/gitconfig", nil
	default:
		return "", askGit("system config of the git in %q unknown", exec)
	}
}

// configDirect reads refcast.* from the files git config would read, in
// its order, and returns what `git config -z --get-regexp ^refcast\.`
// gives; errAskGit when it cannot be sure.
func (r *Repo) configDirect(lookup func(string) (string, bool)) (Config, error) {
	local, err := readConfigFile(filepath.Join(r.CommonDir, "config"))
	if err != nil {
		return nil, err
	}
	f, err := repoFormatOf(local)
	if err != nil {
		return nil, err
	}
	files, err := configFiles(lookup, r, f.worktreeConfig)
	if err != nil {
		return nil, err
	}
	c := Config{}
	for _, path := range files {
		vars := local
		if path != filepath.Join(r.CommonDir, "config") {
			if vars, err = readConfigFile(path); err != nil {
				return nil, err
			}
		}
		if hasInclude(vars) {
			return nil, askGit("%s includes another file", path)
		}
		for _, v := range vars {
			if k, ok := strings.CutPrefix(v.Name, "refcast."); ok {
				k = strings.ToLower(k)
				c[k] = append(c[k], v.Value)
			}
		}
	}
	return c, nil
}
