//go:build unix

package hook

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
)

// queueDirPermError refuses a queue directory group or others may write:
// a queue file makes the drainer publish what it says with the named
// repository's credentials.
func queueDirPermError(dir string, fi fs.FileInfo) error {
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("queue %s: writable by group or others (mode %04o): whoever can write it can publish as any repository; chmod go-w %s (owned by the user git runs hooks as)", dir, m, dir)
	}
	return nil
}

// ownerOf is the file's owner; -1 where it cannot be told.
func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// processAlive says whether a process with this pid exists (one of
// another user's counts).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
