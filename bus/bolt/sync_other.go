//go:build !linux

package bolt

import "os"

// syncData flushes f to stable storage (fsync; F_FULLFSYNC on darwin).
func syncData(f *os.File, noSync bool) error {
	if noSync {
		return nil
	}
	return f.Sync()
}
