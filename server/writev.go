package server

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// errWouldBlock means the socket's send buffer filled before everything
// was written: the client is not keeping up right now.
var errWouldBlock = errors.New("socket send buffer full")

// maxIovecs is Linux's IOV_MAX: the most buffers one writev takes.
const maxIovecs = 1024

var iovecPool = sync.Pool{New: func() any { s := make([]syscall.Iovec, 0, 64); return &s }}

// writeNow writes as much of bufs as the socket takes at once: one writev
// per up to maxIovecs buffers, never waiting, so it arms no deadline timer
// and a full socket costs a writer nothing. It returns the bytes written,
// and errWouldBlock if some are left (*bufsp is then what is left). raw is
// the connection's RawConn.
func writeNow(raw syscall.RawConn, bufsp *net.Buffers) (int64, error) {
	bufs := *bufsp
	defer func() { *bufsp = bufs }()
	var total int64
	var werr error
	iovp := iovecPool.Get().(*[]syscall.Iovec)
	err := raw.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			iov := (*iovp)[:0]
			var want int64
			for _, b := range bufs[:min(len(bufs), maxIovecs)] {
				if len(b) == 0 {
					continue
				}
				v := syscall.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				iov = append(iov, v)
				want += int64(len(b))
			}
			*iovp = iov
			if len(iov) == 0 {
				bufs = bufs[min(len(bufs), maxIovecs):]
				continue
			}
			n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			switch errno {
			case 0:
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				werr = errWouldBlock
				return true
			default:
				werr = errno
				return true
			}
			total += int64(n)
			consume(&bufs, int64(n))
			if int64(n) < want {
				werr = errWouldBlock
				return true
			}
		}
		return true
	})
	clear(*iovp) // do not pin frames from the pool
	iovecPool.Put(iovp)
	if err != nil {
		return total, err
	}
	return total, werr
}

// consume drops the first n bytes of bufs.
func consume(bufs *net.Buffers, n int64) {
	for len(*bufs) > 0 {
		if l := int64(len((*bufs)[0])); l > n {
			(*bufs)[0] = (*bufs)[0][n:]
			return
		} else {
			n -= l
			(*bufs)[0] = nil
			*bufs = (*bufs)[1:]
		}
	}
}
