package cluster

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes a child die with the test binary, so a test killed
// by a timeout leaves no node or balancer behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
