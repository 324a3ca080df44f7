package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/refcast/refcast/hook"
)

const installHookUsage = `Usage: refcast install-hook PATH [flags]

Installs refcast as a git hook of the repository at PATH (bare or not;
core.hooksPath honoured) and writes its settings to the repository's git
config. An existing hook is kept (NAME.refcast-previous), run first with the
same input, and its exit status preserved. Installing twice changes nothing;
--uninstall restores the previous hooks and configuration.

Flags (each also read from the environment variable shown):
  --mode MODE     post-receive (default: pushes) or reference-transaction (pushes
                  and server-side updates: update-ref, merges in a worktree,
                  fetches into a mirror); exactly one is installed   REFCAST_MODE
  --url URL       node base URL -> git config refcast.url          REFCAST_URL
  --redis URL     Redis bus URL -> git config refcast.redis        REFCAST_REDIS
  --repo NAME     repo name     -> git config refcast.repo         REFCAST_REPO
  --binary PATH   refcast binary the hook runs (default: this one) REFCAST_BINARY
  --queue DIR     the hook script writes each push to DIR with shell
                  builtins and exits; 'refcast hook drain --queue DIR'
                  publishes it (a push no longer waits for a refcast process;
                  reference-transaction: verified updates only, the rest as
                  a process). DIR must exist                        REFCAST_QUEUE
  --check         before installing, prove the destination answers and
                  accepts the token (publishes nothing)             REFCAST_CHECK
  --uninstall     remove refcast's hook and configuration           REFCAST_UNINSTALL

A destination is required (--url, --redis, or one the repository's git
config already has); the URL must be http(s)://HOST[:PORT], the repo name
valid, the token (if set) printable. Check an installed hook with
'refcast hook check' run in the repository.

The publish token is never a flag: set it with
  git -C PATH config refcast.token "$(cat token-file)"   (or REFCAST_TOKEN in the hook's environment)
`

// installHookFlags are install-hook's command line.
type installHookFlags struct {
	mode, url, redis, repo, binary, queue string
	check, uninstall                      bool
}

func runInstallHook(ctx context.Context, args []string, env Env) error {
	var f installHookFlags
	path, set, err := parseInstallHookFlags(&f, args, env)
	if err != nil {
		return err
	}
	r := newHookRunner(hook.Flags{Repo: f.repo}, env)
	if f.uninstall {
		return uninstallHook(ctx, path, env)
	}
	if set["url"] || f.url != "" {
		r.Flags.URL = &f.url
	}
	if set["redis"] || f.redis != "" {
		r.Flags.Redis = &f.redis
	}
	binary := f.binary
	if binary == "" {
		if binary, err = os.Executable(); err != nil {
			return fmt.Errorf("install-hook: find this binary (give --binary): %w", err)
		}
	}
	if binary, err = filepath.Abs(binary); err != nil {
		return usageError{msg: "install-hook: --binary: " + err.Error()}
	}
	return hookError(r.InstallHook(ctx, hook.InstallRequest{
		Path: path, Mode: f.mode, Binary: binary, Queue: f.queue, Check: f.check,
		GoTemp: []string{os.TempDir(), env.Getenv("GOTMPDIR")}, GoCache: goCaches(env),
	}))
}

// parseInstallHookFlags parses the command line on the shared flag layer
// (environment twins, one-line errors), and returns the repository path
// and which flags were set.
func parseInstallHookFlags(f *installHookFlags, args []string, env Env) (string, map[string]bool, error) {
	fs := newFlagSet("install-hook", "install-hook PATH [flags]", env)
	fs.setHelp(installHookUsage)
	fs.StringVar(&f.mode, "mode", hook.ModePostReceive, "post-receive or reference-transaction")
	fs.StringVar(&f.url, "url", "", "node base URL")
	fs.StringVar(&f.redis, "redis", "", "Redis bus URL")
	fs.StringVar(&f.repo, "repo", "", "repo name")
	fs.StringVar(&f.binary, "binary", "", "refcast binary the hook runs")
	fs.StringVar(&f.queue, "queue", "", "queue directory a 'refcast hook drain' publishes")
	fs.BoolVar(&f.check, "check", false, "prove the destination answers and accepts the token first")
	fs.BoolVar(&f.uninstall, "uninstall", false, "remove refcast's hook and configuration")
	pos, err := parseInterspersed(fs, args, env)
	if err != nil {
		return "", nil, err
	}
	if len(pos) != 1 {
		return "", nil, usageError{msg: fmt.Sprintf("install-hook: exactly one repository PATH is required, got %d arguments (refcast install-hook PATH [flags])\n%s", len(pos), fs.pointer())}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return pos[0], set, nil
}

func uninstallHook(ctx context.Context, path string, env Env) error {
	repo, err := hook.OpenRepo(ctx, path, "")
	if err != nil {
		return usageError{msg: "install-hook: " + err.Error()}
	}
	changed, err := hook.Uninstall(ctx, repo)
	if err != nil {
		return fmt.Errorf("install-hook: uninstall: %w", err)
	}
	if changed {
		fmt.Fprintf(env.Stdout, "refcast hook removed from %s\n", repo.Path)
	} else {
		fmt.Fprintf(env.Stdout, "no refcast hook in %s\n", repo.Path)
	}
	return nil
}

// goCaches are the build caches go run may leave this binary in: GOCACHE,
// else the default one in the user's cache directory.
func goCaches(env Env) []string {
	if c := env.Getenv("GOCACHE"); c != "" {
		return []string{c}
	}
	if d, err := os.UserCacheDir(); err == nil {
		return []string{filepath.Join(d, "go-build")}
	}
	return nil
}
