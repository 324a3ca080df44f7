//go:build linux && !386 && !s390x

// send and sendmsg are called directly; on 386 and s390x Linux before 4.3
// they exist only through socketcall, so those use writev (write_writev.go).

package fanout

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

type msghdr = unix.Msghdr

// sendFlags: never wait, and report a closed peer as EPIPE without raising
// SIGPIPE.
const sendFlags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL

// sendIovecs writes iov (at least one buffer) to the socket fd with send
// for one buffer, sendmsg for several. msg is scratch space.
func sendIovecs(fd uintptr, iov []syscall.Iovec, msg *msghdr) (uintptr, syscall.Errno) {
	if len(iov) == 1 {
		n, _, errno := syscall.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(iov[0].Base)), uintptr(iov[0].Len), sendFlags, 0, 0)
		return n, errno
	}
	*msg = unix.Msghdr{Iov: (*unix.Iovec)(unsafe.Pointer(&iov[0]))}
	msg.SetIovlen(len(iov))
	n, _, errno := syscall.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(msg)), sendFlags)
	*msg = unix.Msghdr{}
	return n, errno
}
