package redis

import (
	"context"

	"github.com/refcast/refcast/bus"
)

// GitComplete reports whether repo's state is complete for git clients
// (bus.RefState.Complete): one HMGET of two fields of the repo's git hash,
// so a hook may ask after every push.
func (b *Bus) GitComplete(ctx context.Context, repo string) (bool, error) {
	if err := bus.ValidateRepo(repo); err != nil {
		return false, err
	}
	if b.isClosed() {
		return false, bus.ErrClosed
	}
	k := b.parts[bus.PartitionOf(repo, len(b.parts))]
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	vals, err := b.rdb.HMGet(ctx, k.git(repo), bus.FieldHead, bus.FieldComplete).Result()
	if err != nil {
		return false, b.wrap("git state of "+repo, err)
	}
	head, _ := vals[0].(string)
	complete, _ := vals[1].(string)
	return bus.IsComplete(head, complete), nil
}
