//go:build unix

package hook

import "syscall"

// canDetach: Unix can start a process in a session of its own.
const canDetach = true

// detachAttr starts the background flusher in a new session (and so a new
// process group, without a controlling terminal): the hook's exit, its
// terminal's hangup and signals to its group do not reach it.
func detachAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
