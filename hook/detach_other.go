//go:build !unix

package hook

import "syscall"

// canDetach: no background flusher here; the next push's hook flushes the
// spool, or `refcast hook flush`.
const canDetach = false

func detachAttr() *syscall.SysProcAttr { return nil }
