//go:build !unix && !windows

package flock

import "os"

// TryLock returns ErrUnsupported: this platform has no file locks.
func TryLock(*os.File) error { return ErrUnsupported }

// Unlock returns ErrUnsupported: this platform has no file locks.
func Unlock(*os.File) error { return ErrUnsupported }
