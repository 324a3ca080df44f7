//go:build !linux

package hook

// watchQueue has no change notification here: the drainer lists the queue
// every DrainOptions.Rescan (100 ms by default without one).
func watchQueue(string) (<-chan struct{}, func(), error) {
	return nil, func() {}, nil
}
