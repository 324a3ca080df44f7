// Package flock takes advisory, exclusive, whole-file locks that the
// operating system releases when the holder dies: flock(2) on Unix,
// LockFileEx on Windows. The hook's spool and its reference-transaction
// state use it so two hook runs never rewrite the same files at once.
//
// It is not a mutex between goroutines of one process (use sync for that)
// and does not wait: callers poll TryLock with their own context, so a lock
// held by a stuck process costs them their deadline, not their life.
package flock

import "errors"

// ErrWouldBlock means another holder has the lock right now: retry later.
var ErrWouldBlock = errors.New("file is locked by another process")

// ErrUnsupported means this platform has no file locks refcast can use.
var ErrUnsupported = errors.New("file locking is not supported on this platform")
