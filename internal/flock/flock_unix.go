//go:build unix

package flock

import (
	"errors"
	"os"
	"syscall"
)

// TryLock takes an exclusive lock on f without waiting. It returns
// ErrWouldBlock when another open file description holds it; an interrupted
// call (EINTR) is reported the same way, since the caller retries anyway.
func TryLock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EINTR) {
		return ErrWouldBlock
	}
	return err
}

// Unlock releases a lock taken by TryLock. Closing f releases it too.
func Unlock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
