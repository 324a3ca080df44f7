//go:build linux

package hook

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// watchQueue wakes the drainer when a file in dir is closed after writing
// or moved in: inotify, so a push reaches the drainer within a scheduler
// tick, not a polling period. The channel carries no detail: the drainer
// lists the queue on every wake. stop ends the watch and waits for its
// goroutine.
func watchQueue(dir string) (<-chan struct{}, func(), error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, func() {}, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, func() {}, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	// A non-blocking descriptor makes an *os.File the runtime's poller
	// serves, so Close unblocks the Read below.
	f := os.NewFile(uintptr(fd), "inotify")
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		// 64 KiB holds ~4,000 events; more are merged by the kernel or
		// dropped with IN_Q_OVERFLOW, both harmless: any wake lists all.
		buf := make([]byte, 64<<10)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			f.Close()
			wg.Wait()
		})
	}
	return wake, stop, nil
}
