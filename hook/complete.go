package hook

import (
	"context"
	"fmt"

	"github.com/refcast/refcast/bus"
)

// gitStateAsker is implemented by publishers that can tell, after a
// publish, whether the repo's state lacks what git clients need
// (bus.RefState.Complete): HTTPPublisher from the node's answer,
// BusPublisher from the bus.
type gitStateAsker interface {
	GitIncomplete(ctx context.Context, repo string) bool
}

// completeGitState seeds the repo once when the destination says its state
// cannot answer git clients although this push carried HEAD and its peels:
// its older refs were published before refcast kept HEAD and tag peels (or
// by an older hook, or an API publisher), and only a listing of every ref
// can vouch for them. It costs this one push a `refcast sync`'s work
// (reading the refs and peeling them); every later push finds the state
// complete and skips it. A failure is a warning: the push itself was
// delivered, and git clients stay proxied to the git server until the next
// push or sync.
func (r *Runner) completeGitState(ctx context.Context, s Settings, repo *Repo, pub Publisher, pushes []*bus.Push) {
	if len(pushes) == 0 || pushes[0].Head == "" {
		return // HEAD or a peel could not be read: a seed could not vouch either
	}
	if pushes[0].Whole {
		// Another push to the new repository may have published before
		// this one, whose state replaced it: the refs still being only
		// this push's proves none did; otherwise a seed puts them back.
		if repo.HoldsOnly(pushes[0].Updates) {
			return
		}
	} else if a, ok := pub.(gitStateAsker); !ok || !a.GitIncomplete(ctx, s.RepoName) {
		return
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultSyncTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n, err := r.seed(ctx, repo, s, pub, "hook")
	if err != nil {
		r.warnf("warning: %v; git clients of %s are proxied to the git server until 'refcast sync' succeeds", err, s.RepoName)
		return
	}
	fmt.Fprintf(r.Stderr, "refcast hook: seeded %s with %d refs, HEAD and tag peels, once: git clients are answered from refcast from now on\n", s.RepoName, n)
}

var (
	_ gitStateAsker = (*HTTPPublisher)(nil)
	_ gitStateAsker = BusPublisher{}
	_ gitStateAsker = (*lazyBusPublisher)(nil)
)
