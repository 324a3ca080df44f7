package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/hook"
)

const syncUsage = `Usage: refcast sync PATH [--repo NAME] [--url URL | --redis URL]

Seeds the bus with the current refs of the repository at PATH, for repos
that existed before refcast was installed. The repo's stored state is
replaced by what is on disk, and subscribers get a single "sync" event
rather than one per ref. The destination, token and repo name are found as
for 'refcast hook' (flags, REFCAST_* variables, git config refcast.*).
`

func runSync(ctx context.Context, args []string, env Env) error {
	f := newHookFlags("sync", env)
	explainFlagErrors(f.fs, env, syncUsage)
	pos, err := hookParseArgs(f.fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{code: 2}
	}
	if len(pos) != 1 {
		return usageError{msg: "sync: exactly one repository PATH is required"}
	}
	repo, err := hook.OpenRepo(ctx, pos[0], "")
	if err != nil {
		return usageError{msg: "sync: " + err.Error()}
	}
	cfg, err := repo.Config(ctx)
	if err != nil {
		return fmt.Errorf("sync: read git config: %w", err)
	}
	s, err := f.resolve(env, repo, cfg, true)
	if err != nil {
		return err
	}
	pub, closePub := s.publisher()
	defer closePub()
	if pub == nil {
		return usageError{msg: "sync: no destination: give --url or --redis (or REFCAST_URL/REFCAST_REDIS, git config refcast.url/refcast.redis)"}
	}
	refs, err := readRefs(ctx, repo)
	if err != nil {
		return fmt.Errorf("sync: read refs of %s: %w", repo.Path, err)
	}
	if len(refs) > bus.MaxUpdatesPerPush {
		return fmt.Errorf("sync: %s has %d refs; a seed holds at most %d", repo.Path, len(refs), bus.MaxUpdatesPerPush)
	}
	now := time.Now().UTC()
	push := &bus.Push{ID: hook.NewPushID(now), Repo: s.repoName, Pusher: s.pusher, Time: now, Source: "sync", Seed: true, Updates: refs}
	if err := push.Validate(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	timeout := s.timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := pub.Publish(pctx, push); err != nil {
		return fmt.Errorf("sync: publish %s: %w", s.repoName, err)
	}
	fmt.Fprintf(env.Stdout, "refcast sync: seeded %s with %d refs\n", s.repoName, len(refs))
	return nil
}

// readRefs lists every ref under refs/ with its object id, symbolic refs
// left out. It reads the repository with go-git, and with git itself where
// go-git cannot (SHA-256 object format).
func readRefs(ctx context.Context, r *hook.Repo) ([]bus.RefUpdate, error) {
	var out []bus.RefUpdate
	if r.ObjectFormat == "sha1" {
		g, err := git.PlainOpenWithOptions(r.CommonDir, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
		if err == nil {
			iter, err := g.References()
			if err != nil {
				return nil, err
			}
			err = iter.ForEach(func(ref *plumbing.Reference) error {
				if ref.Type() == plumbing.HashReference && strings.HasPrefix(ref.Name().String(), "refs/") {
					out = append(out, bus.RefUpdate{Ref: ref.Name().String(), New: ref.Hash().String()})
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			sortRefs(out)
			return out, nil
		}
	}
	cmd := exec.CommandContext(ctx, r.Git, "--git-dir", r.CommonDir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/")
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git for-each-ref: %w", err)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if id, name, ok := strings.Cut(line, " "); ok {
			out = append(out, bus.RefUpdate{Ref: name, New: id})
		}
	}
	sortRefs(out)
	return out, nil
}

func sortRefs(u []bus.RefUpdate) { sort.Slice(u, func(i, j int) bool { return u[i].Ref < u[j].Ref }) }
