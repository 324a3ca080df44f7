package memory

import (
	"context"

	"github.com/refcast/refcast/bus"
)

// GitComplete reports whether repo's state is complete for git clients
// (bus.RefState.Complete) without copying its refs.
func (b *Bus) GitComplete(ctx context.Context, repo string) (bool, error) {
	if err := bus.ValidateRepo(repo); err != nil {
		return false, err
	}
	if b.isClosed() {
		return false, bus.ErrClosed
	}
	part := b.parts[bus.PartitionOf(repo, len(b.parts))]
	part.mu.RLock()
	defer part.mu.RUnlock()
	git := part.git[repo]
	return bus.IsComplete(git[bus.FieldHead], git[bus.FieldComplete]), nil
}
