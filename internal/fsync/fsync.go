// Package fsync makes a directory's entries durable: after a file is
// created or renamed into a directory, the file's own sync does not cover
// its name, and a crash can lose it. The hook's spool, the embedded bus's
// log and the watcher's state use it.
package fsync

import "os"

// Dir syncs the directory dir (fsync(2) on its descriptor). Windows cannot
// sync a directory this way; callers that run there decide what to do.
func Dir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
