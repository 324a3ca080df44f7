//go:build windows

package flock

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// lockBytes is the range locked: one byte at offset 0 stands for the whole
// file, since every holder locks the same range.
const lockBytes = 1

// TryLock takes an exclusive lock on f without waiting. It returns
// ErrWouldBlock when another handle holds it.
func TryLock(f *os.File) error {
	ol := new(windows.Overlapped)
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, lockBytes, 0, ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) || errors.Is(err, windows.ERROR_IO_PENDING) {
		return ErrWouldBlock
	}
	return err
}

// Unlock releases a lock taken by TryLock. Closing f releases it too.
func Unlock(f *os.File) error {
	return windows.UnlockFileEx(windows.Handle(f.Fd()), 0, lockBytes, 0, new(windows.Overlapped))
}
