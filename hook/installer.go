package hook

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// InstallRequest is one `refcast install-hook` run. The destination and
// repo name come from Runner.Flags (URL, Redis, Repo): given ones are
// written to git config, the rest are what the repository already has.
type InstallRequest struct {
	Path   string // the repository
	Mode   string // ModePostReceive (default) or ModeReferenceTransaction
	Binary string // absolute path of the refcast binary the hook runs
	// Queue is a queue directory (see DrainQueue): the script hands pushes
	// to the drainer of it instead of running refcast. It must exist.
	Queue string
	// Check probes the destination before installing (see Runner.Check);
	// nothing is installed when it fails.
	Check bool
	// GoTemp and GoCache are where the go command leaves binaries that do
	// not last: temporary directories holding go-build* work directories
	// (go run, go test) and build caches (go run since Go 1.24). A Binary
	// under one of them draws a warning.
	GoTemp, GoCache []string
}

// InstallHook validates the settings the hook will run with, optionally
// checks the destination, then installs (see Install) and says what it did.
// A destination is required: a hook without one spools every push.
func (r *Runner) InstallHook(ctx context.Context, req InstallRequest) error {
	const cmd = "install-hook"
	repo, err := OpenRepo(ctx, req.Path, r.Git)
	if err != nil {
		return usagef("%s: %v", cmd, err)
	}
	cfg, err := repo.Config(ctx)
	if err != nil {
		return usagef("%s: %v", cmd, err)
	}
	s, err := Resolve(Sources{Flags: r.Flags, Getenv: r.Getenv, Config: cfg}, repo, true)
	if err != nil {
		return usagef("%s: %s", cmd, strings.TrimPrefix(err.Error(), "hook: "))
	}
	if err := s.validateFor(cmd, cfg); err != nil {
		return err
	}
	if req.Queue != "" {
		if err := checkQueueDir(cmd, req.Queue, r.Stderr); err != nil {
			return err
		}
	}
	if ephemeral(req.Binary, req.GoTemp, req.GoCache) {
		fmt.Fprintf(r.Stderr, "refcast install-hook: warning: %s is in a temporary Go build directory (go run or go test) and will vanish; build it with 'go build -o /usr/local/bin/refcast ./cmd/refcast' and install again from there (or give --binary)\n", req.Binary)
	}
	if req.Check {
		if err := r.check(ctx, cmd+" --check", s); err != nil {
			return fmt.Errorf("%w; nothing installed", err)
		}
	}
	res, err := Install(ctx, repo, InstallOptions{Mode: req.Mode, Binary: req.Binary, Queue: req.Queue, Config: r.installConfig()})
	if err != nil {
		return usagef("%s: %v", cmd, err)
	}
	mode := req.Mode
	if mode == "" {
		mode = ModePostReceive
	}
	switch {
	case !res.Changed:
		fmt.Fprintf(r.Stdout, "refcast %s hook already installed: %s\n", mode, res.Hook)
	case req.Queue != "" && res.Previous != "":
		fmt.Fprintf(r.Stdout, "refcast %s hook installed: %s (runs the previous hook %s first; with one chained, pushes are published by the hook process, not the queue)\n", mode, res.Hook, res.Previous)
	case req.Queue != "":
		fmt.Fprintf(r.Stdout, "refcast %s hook installed: %s (queued to %s)\n", mode, res.Hook, req.Queue)
	case res.Previous != "":
		fmt.Fprintf(r.Stdout, "refcast %s hook installed: %s (runs the previous hook %s first)\n", mode, res.Hook, res.Previous)
	default:
		fmt.Fprintf(r.Stdout, "refcast %s hook installed: %s\n", mode, res.Hook)
	}
	return nil
}

// installConfig is the git config install writes: the given flags.
func (r *Runner) installConfig() map[string]string {
	cfg := map[string]string{"repo": r.Flags.Repo}
	if r.Flags.URL != nil {
		cfg["url"] = *r.Flags.URL
	}
	if r.Flags.Redis != nil {
		cfg["redis"] = *r.Flags.Redis
	}
	return cfg
}

// ephemeral reports whether binary lies in a go-build* directory directly
// under one of temps, or anywhere under one of caches.
func ephemeral(binary string, temps, caches []string) bool {
	for _, dir := range temps {
		if rel, ok := below(dir, binary); ok && strings.HasPrefix(rel, "go-build") {
			return true
		}
	}
	for _, dir := range caches {
		if _, ok := below(dir, binary); ok {
			return true
		}
	}
	return false
}

// below returns path relative to dir when path is inside dir.
func below(dir, path string) (string, bool) {
	if dir == "" {
		return "", false
	}
	rel, err := filepath.Rel(dir, path)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	return rel, true
}
