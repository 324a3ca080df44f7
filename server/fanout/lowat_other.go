//go:build !linux

package fanout

import "syscall"

// limitUnsent does nothing here: the cap is Linux's TCP_NOTSENT_LOWAT (see
// lowat_linux.go).
func limitUnsent(syscall.RawConn) bool { return false }

func liftUnsent(syscall.RawConn) {}
