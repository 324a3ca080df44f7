package fanout

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

// maxIovecs is Linux's IOV_MAX: the most buffers one call takes.
const maxIovecs = 1024

// sendState is the scratch space of one writeNow call, pooled with the
// callback bound to it, so a write allocates nothing.
type sendState struct {
	iov     []syscall.Iovec
	msg     msghdr
	bufs    net.Buffers
	total   int64
	err     error
	sendmsg bool
	fn      func(fd uintptr) bool // st.write, bound once
}

var sendPool = sync.Pool{New: func() any {
	st := &sendState{iov: make([]syscall.Iovec, 0, 64)}
	st.fn = st.write
	return st
}}

// writeNow writes as much of bufs as the socket takes at once, never
// waiting, so it arms no deadline timer and a full socket costs a writer
// nothing. On Linux (write_send.go) it uses send/sendmsg rather than writev: a socket call
// skips the file layer's work on every write (fsnotify among it, ~4 % of
// the server's CPU in a profile of a fan-out to 18,000 streams;
// BenchmarkSendCall measured 3 % less time per frame, reader included). It
// returns the bytes written, and errWouldBlock if some are left (*bufsp is
// then what is left). raw is the connection's RawConn.
func writeNow(raw syscall.RawConn, bufsp *net.Buffers) (int64, error) {
	return writeNowWith(raw, bufsp, true)
}

// writeNowWith is writeNow with the system call chosen: send/sendmsg
// where available (true) or writev, for the benchmark comparing them.
func writeNowWith(raw syscall.RawConn, bufsp *net.Buffers, sendmsg bool) (int64, error) {
	st := sendPool.Get().(*sendState)
	st.bufs, st.total, st.err, st.sendmsg = *bufsp, 0, nil, sendmsg
	err := raw.Write(st.fn)
	*bufsp = st.bufs
	total, werr := st.total, st.err
	clear(st.iov) // do not pin frames from the pool
	st.iov, st.bufs, st.err = st.iov[:0], nil, nil
	sendPool.Put(st)
	if err != nil {
		return total, err
	}
	return total, werr
}

// write is the RawConn callback: it writes st.bufs until the socket is
// full or everything is out.
func (st *sendState) write(fd uintptr) bool {
	for len(st.bufs) > 0 {
		iov := st.iov[:0]
		var want int64
		for _, b := range st.bufs[:min(len(st.bufs), maxIovecs)] {
			if len(b) == 0 {
				continue
			}
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
			want += int64(len(b))
		}
		st.iov = iov
		if len(iov) == 0 {
			st.bufs = st.bufs[min(len(st.bufs), maxIovecs):]
			continue
		}
		var n uintptr
		var errno syscall.Errno
		if st.sendmsg {
			n, errno = sendIovecs(fd, iov, &st.msg)
		} else {
			n, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		}
		switch errno {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			st.err = errWouldBlock
			return true
		default:
			st.err = errno
			return true
		}
		st.total += int64(n)
		consume(&st.bufs, int64(n))
		if int64(n) < want {
			st.err = errWouldBlock
			return true
		}
	}
	return true
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
