package hook

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/refcast/refcast/bus"
)

// SourceSync is bus.Push.Source of a seed published by Sync.
const SourceSync = "sync"

// Sync seeds the bus with the current refs of the repository at path: one
// push with Seed set, which replaces the repo's stored state. Settings are
// resolved as for the hooks, from that repository's git config.
func (r *Runner) Sync(ctx context.Context, path string) error {
	repo, err := OpenRepo(ctx, path, r.Git)
	if err != nil {
		return usagef("sync: %v", err)
	}
	cfg, err := repo.Config(ctx)
	if err != nil {
		return fmt.Errorf("sync: read git config: %w", err)
	}
	s, err := Resolve(Sources{Flags: r.Flags, Getenv: r.Getenv, Config: cfg}, repo, true)
	if err != nil {
		return err
	}
	pub, closePub, err := s.publisher(r.OpenBus)
	if err != nil {
		return err
	}
	defer closePub()
	if pub == nil {
		return errNoDestination("sync")
	}
	refs, err := repo.Refs(ctx)
	if err != nil {
		return fmt.Errorf("sync: read refs of %s: %w", repo.Path, err)
	}
	if len(refs) > bus.MaxRefsPerSeed {
		return fmt.Errorf("sync: %s has %d refs; a seed holds at most %d, so refcast cannot hold this repository's state (its git clients are proxied to the git server)", repo.Path, len(refs), bus.MaxRefsPerSeed)
	}
	// HEAD and the peels make the seeded state complete for git clients;
	// without them the seed still replaces the refs (bus.GitFields).
	head := ""
	if err := repo.Peel(ctx, refs); err != nil {
		fmt.Fprintf(r.Stderr, "refcast sync: warning: %v; git clients of %s will be proxied to the git server\n", err, s.RepoName)
	} else {
		head = repo.Head(ctx)
	}
	now := time.Now().UTC()
	push := &bus.Push{ID: NewPushID(now), Repo: s.RepoName, Pusher: s.Pusher, Time: now, Source: SourceSync, Seed: true, Head: head, Updates: refs}
	if err := push.Validate(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultSyncTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := pub.Publish(pctx, push); err != nil {
		return fmt.Errorf("sync: publish %s: %w", s.RepoName, err)
	}
	fmt.Fprintf(r.Stdout, "refcast sync: seeded %s with %d refs\n", s.RepoName, len(refs))
	return nil
}

// Refs lists every ref under refs/ with its object id (in New), sorted by
// name, symbolic refs left out. It reads the repository with go-git, and
// with git itself where go-git cannot (SHA-256 object format).
func (r *Repo) Refs(ctx context.Context) ([]bus.RefUpdate, error) {
	if r.ObjectFormat == "sha1" {
		g, err := gogit.PlainOpenWithOptions(r.CommonDir, &gogit.PlainOpenOptions{EnableDotGitCommonDir: true})
		if err == nil {
			return refsGoGit(g)
		}
	}
	cmd := exec.CommandContext(ctx, r.Git, "--git-dir", r.CommonDir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/")
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git for-each-ref: %w", err)
	}
	var out []bus.RefUpdate
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if id, name, ok := strings.Cut(line, " "); ok {
			out = append(out, bus.RefUpdate{Ref: name, New: id})
		}
	}
	sortRefs(out)
	return out, nil
}

func refsGoGit(g *gogit.Repository) ([]bus.RefUpdate, error) {
	iter, err := g.References()
	if err != nil {
		return nil, err
	}
	var out []bus.RefUpdate
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

func sortRefs(u []bus.RefUpdate) { sort.Slice(u, func(i, j int) bool { return u[i].Ref < u[j].Ref }) }
