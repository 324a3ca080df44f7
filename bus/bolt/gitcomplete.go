package bolt

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/refcast/refcast/bus"
)

// GitComplete reports whether repo's state is complete for git clients
// (bus.RefState.Complete), reading two keys rather than the whole state.
func (b *Bus) GitComplete(ctx context.Context, repo string) (bool, error) {
	if err := bus.ValidateRepo(repo); err != nil {
		return false, err
	}
	s, err := b.state()
	if err != nil {
		return false, err
	}
	if inTail(s.tail, repo) {
		st, err := b.Refs(ctx, repo)
		return st.Complete, err
	}
	pi := bus.PartitionOf(repo, b.opts.Partitions)
	var complete bool
	err = b.view(ctx, "read git state", func(tx *bolt.Tx) error {
		part, err := openPartition(tx, pi)
		if err != nil {
			return err
		}
		if rb := part.refs.Bucket([]byte(repo)); rb != nil {
			complete = bus.IsComplete(string(rb.Get([]byte(bus.FieldHead))), string(rb.Get([]byte(bus.FieldComplete))))
		}
		return nil
	})
	return complete, err
}
