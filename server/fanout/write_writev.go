//go:build !linux || 386 || s390x

package fanout

import (
	"syscall"
	"unsafe"
)

type msghdr struct{}

// sendIovecs writes iov (at least one buffer) to fd with writev.
func sendIovecs(fd uintptr, iov []syscall.Iovec, _ *msghdr) (uintptr, syscall.Errno) {
	n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	return n, errno
}
