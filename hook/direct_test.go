package hook

import (
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// envMap is an environment for the direct reading and for git: a nil
// lookup entry is unset, "" is set but empty.
type envMap map[string]string

func (e envMap) lookup(name string) (string, bool) {
	v, ok := e[name]
	return v, ok
}

// environ is e over the test process's environment (TestMain's isolated
// HOME and GIT_CONFIG_NOSYSTEM), with e's GIT_CONFIG_NOSYSTEM, HOME and
// friends replacing those.
func (e envMap) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := e[k]; !ok && !strings.HasPrefix(k, "GIT_CONFIG") && k != "HOME" && k != "XDG_CONFIG_HOME" {
			env = append(env, kv)
		}
	}
	for k, v := range e {
		env = append(env, k+"="+v)
	}
	return env
}

// gitRepo runs OpenRepo with env, in dir.
func gitRepo(t *testing.T, dir string, env envMap) *Repo {
	t.Helper()
	cmd := exec.Command(gitBin, "rev-parse", "--path-format=absolute", "--absolute-git-dir", "--git-common-dir", "--show-object-format")
	cmd.Dir, cmd.Env = dir, env.environ()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git rev-parse in %s: %v", dir, err)
	}
	f := strings.Fields(string(out))
	return newRepo(f[0], filepath.Clean(f[1]), f[2], gitBin)
}

// gitConfig is `git config -z --get-regexp ^refcast\.` run as Repo.Config
// runs it, with env; the map Repo.Config builds from it.
func gitConfig(t *testing.T, r *Repo, env envMap) Config {
	t.Helper()
	cmd := exec.Command(gitBin, "--git-dir="+r.GitDir, "config", "-z", "--get-regexp", `^refcast\.`)
	cmd.Env = env.environ()
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return Config{}
	}
	if err != nil {
		t.Fatalf("git config: %v", err)
	}
	c := Config{}
	for _, v := range parseConfigZ(out) {
		k := strings.TrimPrefix(strings.ToLower(v.Name), "refcast.")
		c[k] = append(c[k], v.Value)
	}
	return c
}

func TestOpenRepoDirectLikeRevParse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bare := filepath.Join(dir, "srv.git")
	git(t, dir, "init", "-q", "--bare", bare)
	wc := filepath.Join(dir, "wc")
	git(t, dir, "init", "-q", wc)
	commit(t, wc, "one")
	wt := filepath.Join(dir, "linked")
	git(t, wc, "worktree", "add", "-q", "-b", "side", wt)
	sha256 := filepath.Join(dir, "sha256.git")
	git(t, dir, "init", "-q", "--bare", "--object-format=sha256", sha256)
	link := filepath.Join(dir, "link.git")
	if err := os.Symlink(bare, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, gitDir, cwd string
		env               envMap
	}{
		{"bare", bare, bare, nil},
		{"non-bare", filepath.Join(wc, ".git"), wc, nil},
		{"linked worktree", filepath.Join(wc, ".git", "worktrees", "linked"), wt, nil},
		{"sha256", sha256, sha256, nil},
		{"through a symbolic link", link, link, nil},
		{"GIT_COMMON_DIR", filepath.Join(wc, ".git", "worktrees", "linked"), wt, envMap{"GIT_COMMON_DIR": filepath.Join(wc, ".git")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := envMap{"GIT_DIR": tc.gitDir}
			maps.Copy(env, tc.env)
			got, err := openRepoDirect(env.lookup, gitBin)
			if err != nil {
				t.Fatal(err)
			}
			if want := gitRepo(t, tc.cwd, env); !reflect.DeepEqual(got, want) {
				t.Fatalf("direct %+v\nrev-parse %+v", got, want)
			}
		})
	}
}

// TestOpenRepoDirectRelativeGitDir is the way receive-pack runs hooks:
// GIT_DIR=. in the repository. (t.Chdir: not parallel.)
func TestOpenRepoDirectRelativeGitDir(t *testing.T) {
	bare, _ := newRepos(t)
	t.Chdir(bare)
	env := envMap{"GIT_DIR": "."}
	got, err := openRepoDirect(env.lookup, gitBin)
	if err != nil {
		t.Fatal(err)
	}
	if want := gitRepo(t, bare, env); !reflect.DeepEqual(got, want) {
		t.Fatalf("direct %+v\nrev-parse %+v", got, want)
	}
}

func TestOpenRepoDirectAsksGit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	repo := func(name string, cfg ...string) string {
		p := filepath.Join(dir, name)
		git(t, dir, "init", "-q", "--bare", p)
		for i := 0; i < len(cfg); i += 2 {
			git(t, p, "config", cfg[i], cfg[i+1])
		}
		return p
	}
	noConfig := repo("noconfig.git")
	os.Remove(filepath.Join(noConfig, "config"))
	gitfile := filepath.Join(dir, "gitfile")
	os.WriteFile(gitfile, []byte("gitdir: "+repo("target.git")+"\n"), 0o644)
	for _, tc := range []struct {
		name string
		env  envMap
	}{
		{"no GIT_DIR", envMap{}},
		{"empty GIT_DIR", envMap{"GIT_DIR": ""}},
		{"missing", envMap{"GIT_DIR": filepath.Join(dir, "nope")}},
		{"not a repository", envMap{"GIT_DIR": dir}},
		{"a gitfile", envMap{"GIT_DIR": gitfile}},
		{"no config file", envMap{"GIT_DIR": noConfig}},
		{"unknown extension", envMap{"GIT_DIR": repo("ext.git", "core.repositoryformatversion", "1", "extensions.refStorage", "reftable")}},
		{"format version 2", envMap{"GIT_DIR": repo("v2.git", "core.repositoryformatversion", "2")}},
		{"objectformat in version 0", envMap{"GIT_DIR": repo("v0.git", "extensions.objectFormat", "sha256")}},
		{"bad objectformat", envMap{"GIT_DIR": repo("bad.git", "core.repositoryformatversion", "1", "extensions.objectFormat", "md5")}},
		{"empty GIT_COMMON_DIR", envMap{"GIT_DIR": repo("cd.git"), "GIT_COMMON_DIR": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := openRepoDirect(tc.env.lookup, gitBin); !errors.Is(err, errAskGit) {
				t.Fatalf("got %+v, %v; want it to ask git", r, err)
			}
		})
	}
}

// writeFile writes text to path, making its directory.
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConfigDirectLikeGitConfig compares the refcast.* configuration read
// from the files with `git config -z --get-regexp ^refcast\.` on the same
// files and environment, over every scope.
func TestConfigDirectLikeGitConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bare := filepath.Join(dir, "srv.git")
	git(t, dir, "init", "-q", "--bare", bare)
	wc := filepath.Join(dir, "wc")
	git(t, dir, "init", "-q", wc)
	commit(t, wc, "one")
	wt := filepath.Join(dir, "linked")
	git(t, wc, "worktree", "add", "-q", "-b", "side", wt)
	git(t, wc, "config", "core.repositoryformatversion", "1")
	git(t, wc, "config", "extensions.worktreeConfig", "true")
	wtGitDir := filepath.Join(wc, ".git", "worktrees", "linked")

	tricky := "[refcast]\n\turl = \"http://a b\"  # comment\n\ttoken = x\\\"y\\\\z ; comment\n\tflushBackground\n" +
		"\trepoMap = ^/srv/(.+)\\\n=$1\n[RefCast \"Sub\"]\n\tKey = a\tb\n[core]\n\tbare = true\n[refcast]\n\trepoMap = second\n"
	system := filepath.Join(dir, "etc", "gitconfig")
	writeFile(t, system, "[refcast]\n\trepoMap = from-system\n\ttimeout = 1s\n")
	home := filepath.Join(dir, "home")
	writeFile(t, filepath.Join(home, ".gitconfig"), "[refcast]\n\trepoMap = from-home\n\ttimeout = 2s\n")
	xdg := filepath.Join(dir, "xdg")
	writeFile(t, filepath.Join(xdg, "git", "config"), "[refcast]\n\trepoMap = from-xdg\n")
	writeFile(t, filepath.Join(home, ".config", "git", "config"), "[refcast]\n\trepoMap = from-home-config\n")
	global := filepath.Join(dir, "global")
	writeFile(t, global, "[refcast]\n\trepoMap = from-global\n")
	git(t, bare, "config", "--add", "refcast.repoMap", "from-local")
	git(t, wc, "config", "--add", "refcast.repoMap", "from-local")
	git(t, wt, "config", "--worktree", "--add", "refcast.repoMap", "from-worktree")
	git(t, wt, "config", "--worktree", "refcast.url", "http://worktree")
	trickyRepo := filepath.Join(dir, "tricky.git")
	git(t, dir, "init", "-q", "--bare", trickyRepo)
	f, _ := os.OpenFile(filepath.Join(trickyRepo, "config"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(tricky)
	f.Close()

	for _, tc := range []struct {
		name, gitDir string
		env          envMap
	}{
		{"local only", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1"}},
		{"tricky values", trickyRepo, envMap{"GIT_CONFIG_NOSYSTEM": "true"}},
		{"system, home, local", bare, envMap{"GIT_CONFIG_SYSTEM": system, "HOME": home}},
		{"system off by NOSYSTEM", bare, envMap{"GIT_CONFIG_SYSTEM": system, "GIT_CONFIG_NOSYSTEM": "yes", "HOME": home}},
		{"system on by NOSYSTEM=false", bare, envMap{"GIT_CONFIG_SYSTEM": system, "GIT_CONFIG_NOSYSTEM": "false", "HOME": home}},
		{"XDG before home", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "HOME": home, "XDG_CONFIG_HOME": xdg}},
		{"home's .config", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "HOME": home}},
		{"GIT_CONFIG_GLOBAL", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "HOME": home, "GIT_CONFIG_GLOBAL": global}},
		{"GIT_CONFIG_GLOBAL empty", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "HOME": home, "GIT_CONFIG_GLOBAL": ""}},
		{"no HOME", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1"}},
		{"main worktree", filepath.Join(wc, ".git"), envMap{"GIT_CONFIG_SYSTEM": system, "HOME": home}},
		{"linked worktree with config.worktree", wtGitDir, envMap{"GIT_CONFIG_SYSTEM": system, "HOME": home}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := openRepoDirect(envMap{"GIT_DIR": tc.gitDir}.lookup, gitBin)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.configDirect(tc.env.lookup)
			if err != nil {
				t.Fatal(err)
			}
			want := gitConfig(t, r, tc.env)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("direct %q\ngit    %q", got, want)
			}
			if len(want) == 0 {
				t.Fatal("git sees no refcast.* at all: the case tests nothing")
			}
		})
	}
}

// TestConfigDirectAsksGit: whatever the files alone cannot answer goes to
// git config, and hookConfig's answer is then git's.
func TestConfigDirectAsksGit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bare := filepath.Join(dir, "srv.git")
	git(t, dir, "init", "-q", "--bare", bare)
	git(t, bare, "config", "refcast.url", "http://local")
	included := filepath.Join(dir, "included")
	writeFile(t, included, "[refcast]\n\trepo = from/include\n")
	withInclude := filepath.Join(dir, "inc.git")
	git(t, dir, "init", "-q", "--bare", withInclude)
	git(t, withInclude, "config", "include.path", included)
	globalInclude := filepath.Join(dir, "global")
	writeFile(t, globalInclude, "[includeIf \"gitdir:"+dir+"/\"]\n\tpath = "+included+"\n")
	badGlobal := filepath.Join(dir, "bad")
	writeFile(t, badGlobal, "[refcast]\n\turl = \"unterminated\n")
	nul := filepath.Join(dir, "nul")
	writeFile(t, nul, "[refcast]\n\trepo = a\x00b\n")

	for _, tc := range []struct {
		name, gitDir string
		env          envMap
		want         Config // what git config says (nil: it fails)
	}{
		{"include in the repository", withInclude, envMap{"GIT_CONFIG_NOSYSTEM": "1"}, Config{"repo": {"from/include"}}},
		{"includeIf in the global file", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": globalInclude}, Config{"repo": {"from/include"}, "url": {"http://local"}}},
		{"GIT_CONFIG_PARAMETERS", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_PARAMETERS": "'refcast.repo'='from/cmdline'"}, Config{"repo": {"from/cmdline"}, "url": {"http://local"}}},
		{"GIT_CONFIG_COUNT", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "refcast.repo", "GIT_CONFIG_VALUE_0": "from/env"}, Config{"repo": {"from/env"}, "url": {"http://local"}}},
		{"GIT_CONFIG", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG": included}, Config{"repo": {"from/include"}}},
		{"a file git refuses", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": badGlobal}, nil},
		{"a NUL byte", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": nul}, nil},
		{"an unknown git's system file", bare, envMap{"GIT_EXEC_PATH": "/opt/git/libexec/git-core"}, nil},
		{"relative GIT_CONFIG_GLOBAL", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "global"}, nil},
		{"empty HOME", bare, envMap{"GIT_CONFIG_NOSYSTEM": "1", "HOME": ""}, nil},
		{"NOSYSTEM not a boolean", bare, envMap{"GIT_CONFIG_NOSYSTEM": "maybe"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := openRepoDirect(envMap{"GIT_DIR": tc.gitDir}.lookup, gitBin)
			if err != nil {
				t.Fatal(err)
			}
			if c, err := r.configDirect(tc.env.lookup); !errors.Is(err, errAskGit) {
				t.Fatalf("direct read gave %q, %v; want it to ask git", c, err)
			}
			if tc.want == nil {
				return
			}
			// What the hook uses then is git's answer, includes and all.
			if got := gitConfig(t, r, tc.env); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("git config %q, want %q", got, tc.want)
			}
		})
	}
}

// TestHookConfigFallsBack runs the Runner's choice end to end in this
// process: with GIT_CONFIG_PARAMETERS in the environment the hook's
// configuration is git config's (the process environment is what git
// reads, so it is set for real; not parallel).
func TestHookConfigFallsBack(t *testing.T) {
	bare, _ := newRepos(t)
	git(t, bare, "config", "refcast.url", "http://local")
	t.Setenv("GIT_CONFIG_PARAMETERS", "'refcast.repo'='from/cmdline'")
	r := &Runner{Getenv: os.Getenv, LookupEnv: os.LookupEnv, Git: gitBin}
	repo := openRepo(t, bare)
	cfg, err := r.hookConfig(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{"repo": {"from/cmdline"}, "url": {"http://local"}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config %q, want %q", cfg, want)
	}
}
