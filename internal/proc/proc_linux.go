package proc

import (
	"os/exec"
	"syscall"
)

// DieWithParent makes cmd's process get SIGKILL when the process that
// started it dies, so a test killed by a timeout leaves no server behind.
// Call it before cmd.Start. It replaces cmd.SysProcAttr.
//
// Linux delivers the signal when the starting thread exits, not the
// process; Go test binaries keep their threads, which is why this is
// enough for tests.
func DieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
