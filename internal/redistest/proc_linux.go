package redistest

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes redis-server die with the test binary, so a test
// killed by a timeout does not leave servers behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
