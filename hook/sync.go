package hook

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"

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
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultSyncTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	refs, err := r.seed(pctx, repo, s, pub, "sync")
	if err != nil {
		return err
	}
	fmt.Fprintf(r.Stdout, "refcast sync: seeded %s with %d refs\n", s.RepoName, refs)
	return nil
}

// maxSeedRounds bounds seed's re-reads: a push racing a seed can land
// between the seed's read of the refs and its publish (the seed then puts
// back an older value), so the refs are read again after it and the seed
// repeated while they differ; three rounds settle all but a repository
// pushed to continuously, whose next push corrects the one ref anyway.
const maxSeedRounds = 3

// seed publishes repo's every ref as one seed push (bus.Push.Seed), with
// HEAD and the tags' peels so the state is complete for git clients, and
// returns how many refs it held. cmd names the command in messages.
func (r *Runner) seed(ctx context.Context, repo *Repo, s Settings, pub Publisher, cmd string) (int, error) {
	refs, err := repo.Refs(ctx)
	for round := 1; ; round++ {
		if err != nil {
			return 0, fmt.Errorf("%s: read refs of %s: %w", cmd, repo.Path, err)
		}
		if len(refs) > bus.MaxRefsPerSeed {
			return 0, fmt.Errorf("%s: %s has %d refs; a seed holds at most %d, so refcast cannot hold this repository's state (its git clients are proxied to the git server)", cmd, repo.Path, len(refs), bus.MaxRefsPerSeed)
		}
		// HEAD and the peels make the seeded state complete for git
		// clients; without them the seed still replaces the refs
		// (bus.GitFields).
		head := ""
		if err := repo.Peel(ctx, refs); err != nil {
			fmt.Fprintf(r.Stderr, "refcast %s: warning: %v; git clients of %s will be proxied to the git server\n", cmd, err, s.RepoName)
		} else {
			head = repo.Head(ctx)
		}
		now := time.Now().UTC()
		push := &bus.Push{ID: NewPushID(now), Repo: s.RepoName, Pusher: s.Pusher, Time: now, Source: SourceSync, Seed: true, Head: head, Updates: refs}
		if err := push.Validate(); err != nil {
			return 0, fmt.Errorf("%s: %w", cmd, err)
		}
		if err := pub.Publish(ctx, push); err != nil {
			return 0, fmt.Errorf("%s: publish %s: %w", cmd, s.RepoName, err)
		}
		var again []bus.RefUpdate
		again, err = repo.Refs(ctx)
		if err != nil || sameRefs(refs, again) || round == maxSeedRounds {
			return len(refs), nil
		}
		refs = again
	}
}

// sameRefs reports whether two sorted ref lists name the same objects.
func sameRefs(a, b []bus.RefUpdate) bool {
	return slices.EqualFunc(a, b, func(x, y bus.RefUpdate) bool { return x.Ref == y.Ref && x.New == y.New })
}

// Refs lists every ref under refs/ with its object id (in New), sorted by
// name, symbolic refs left out. It reads the loose refs and packed-refs
// in-process with go-git's storage layer (no process start), and asks git
// where that layer cannot read them: a SHA-256 repository, the reftable
// backend, or any error.
//
// It uses go-git's storage package, not the top-level go-git package: that
// one links go-git's transports, SSH and OpenPGP (ProtonMail, circl) into
// the binary, whose package initialisation every hook run pays (about 2 ms
// of its start on a 2-core machine: GODEBUG=inittrace=1 refcast version),
// for nothing refcast calls.
func (r *Repo) Refs(ctx context.Context) ([]bus.RefUpdate, error) {
	if r.ObjectFormat == "sha1" && !r.hasReftable() {
		if out, err := r.refsGoGit(); err == nil {
			return out, nil
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

// hasReftable reports whether the repository keeps its refs in the
// reftable format, which go-git v5 cannot read.
func (r *Repo) hasReftable() bool {
	_, err := os.Stat(filepath.Join(r.CommonDir, "reftable"))
	return err == nil
}

func (r *Repo) refsGoGit() ([]bus.RefUpdate, error) {
	st := filesystem.NewStorage(osfs.New(r.CommonDir), cache.NewObjectLRUDefault())
	defer st.Close()
	iter, err := st.IterReferences()
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
