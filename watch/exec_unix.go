//go:build unix

package watch

import (
	"os/exec"
	"syscall"
)

// setProcessGroup runs the command in its own process group, so a Ctrl-C
// on the terminal reaches the watcher only (which lets the command finish
// within its grace period), and a cancellation terminates the whole group,
// children of sh included.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
}
