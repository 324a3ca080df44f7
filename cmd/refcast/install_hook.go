package main

import (
	"context"
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
  --uninstall     remove refcast's hook and configuration           REFCAST_UNINSTALL

The publish token is never a flag: set it with
  git -C PATH config refcast.token "$(cat token-file)"   (or REFCAST_TOKEN in the hook's environment)
`

func runInstallHook(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("install-hook", "install-hook PATH [flags]", env)
	fs.setHelp(installHookUsage)
	var (
		mode, url, redisURL, repoName, binary string
		uninstall                             bool
	)
	fs.StringVar(&mode, "mode", hook.ModePostReceive, "post-receive or reference-transaction")
	fs.StringVar(&url, "url", "", "node base URL")
	fs.StringVar(&redisURL, "redis", "", "Redis bus URL")
	fs.StringVar(&repoName, "repo", "", "repo name")
	fs.StringVar(&binary, "binary", "", "refcast binary the hook runs")
	fs.BoolVar(&uninstall, "uninstall", false, "remove refcast's hook and configuration")
	pos, err := parseInterspersed(fs, args, env)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{msg: fmt.Sprintf("install-hook: exactly one repository PATH is required, got %d arguments (refcast install-hook PATH [flags])\n%s", len(pos), fs.pointer())}
	}
	repo, err := hook.OpenRepo(ctx, pos[0], "")
	if err != nil {
		return usageError{msg: "install-hook: " + err.Error()}
	}
	if uninstall {
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
	if url != "" && redisURL != "" {
		return usageError{msg: "install-hook: give --url or --redis, not both"}
	}
	if binary == "" {
		if binary, err = os.Executable(); err != nil {
			return fmt.Errorf("install-hook: find this binary (give --binary): %w", err)
		}
	}
	if binary, err = filepath.Abs(binary); err != nil {
		return usageError{msg: "install-hook: --binary: " + err.Error()}
	}
	res, err := hook.Install(ctx, repo, hook.InstallOptions{
		Mode:   mode,
		Binary: binary,
		Config: map[string]string{"url": url, "redis": redisURL, "repo": repoName},
	})
	if err != nil {
		return usageError{msg: "install-hook: " + err.Error()}
	}
	switch {
	case !res.Changed:
		fmt.Fprintf(env.Stdout, "refcast %s hook already installed: %s\n", mode, res.Hook)
	case res.Previous != "":
		fmt.Fprintf(env.Stdout, "refcast %s hook installed: %s (runs the previous hook %s first)\n", mode, res.Hook, res.Previous)
	default:
		fmt.Fprintf(env.Stdout, "refcast %s hook installed: %s\n", mode, res.Hook)
	}
	return nil
}
