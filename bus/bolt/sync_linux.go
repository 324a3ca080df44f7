package bolt

import (
	"os"
	"syscall"
)

// syncData flushes f's data (not its timestamps): the log is preallocated,
// so an append changes no metadata that reading it back needs.
func syncData(f *os.File, noSync bool) error {
	if noSync {
		return nil
	}
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
