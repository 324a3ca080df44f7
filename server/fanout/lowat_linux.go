package fanout

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// limitUnsent caps the bytes the kernel holds unsent for a stream's socket
// at unsentLimit (TCP_NOTSENT_LOWAT), and reports whether it could. What
// is in flight is not capped, so a distant reader still gets a full window
// per round trip; what a client that stopped reading pins in the kernel
// is its receive window plus unsentLimit. Without the cap the kernel grows
// a socket's send buffer with its congestion window up to tcp_wmem's
// maximum (4 MiB): on loopback a stream that never read took 1.3 MB before
// its socket was full, 2,000 of them 2.6 GB of kernel memory and the
// writers' time to copy it (BenchmarkStalledReaders).
func limitUnsent(raw syscall.RawConn) bool {
	var err error
	if cerr := raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, unsentLimit)
	}); cerr != nil {
		return false
	}
	return err == nil
}

// liftUnsent takes limitUnsent's cap off again (0: the system's default,
// net.ipv4.tcp_notsent_lowat, unlimited unless set), for a client that
// showed it reads: one a burst behind then catches up from the kernel's
// buffer rather than waiting for retries.
func liftUnsent(raw syscall.RawConn) {
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 0)
	})
}
