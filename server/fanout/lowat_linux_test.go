package fanout

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sockInt reads an integer from c's descriptor with get.
func sockInt(t *testing.T, c net.Conn, get func(fd int) (int, error)) int {
	t.Helper()
	sc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if cerr := sc.Control(func(fd uintptr) { v, err = get(int(fd)) }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func unsentLowat(fd int) (int, error) {
	return unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
}

// unsent is the bytes in the socket's send queue not yet sent: what
// TCP_NOTSENT_LOWAT caps (what is in flight depends on the peer's window
// and how soon the machine runs the loopback's acknowledgements).
func unsent(fd int) (int, error) { return unix.IoctlGetInt(fd, unix.SIOCOUTQNSD) }

// TestStalledSocketPinsLittle: the kernel holds at most unsentLimit (and
// one write's overshoot) for a stream whose client never reads; without
// the cap, loopback's send buffer grew to 1.3 MB per such stream. A client
// that then empties its socket has shown it reads: the cap comes off, so
// its backlog can sit in the kernel again.
func TestStalledSocketPinsLittle(t *testing.T) {
	n := runEngine(t, func(o *Options) {
		o.MaxQueue = 10000 // not evicted for its queue while this looks
		o.WriteTimeout = time.Hour
	})
	stalled := n.stalledStream(t, Spec{}, "acme/app")
	srv, cli := loopback(t)
	reader := n.attach(t, Spec{}, srv, "acme/app")
	if got := sockInt(t, srv, unsentLowat); got != unsentLimit {
		t.Fatalf("TCP_NOTSENT_LOWAT %d on a new stream, want %d", got, unsentLimit)
	}
	// 1,000 events of 2.3 KB: far more than both sockets take unread.
	for i := 0; i < 1000; i += 100 {
		n.publish(t, bigPush("acme/app", i, 100, func(int) string { return oid(0) }, func(r int) string { return oid(r + 1) }))
	}
	stuck := func(st Stream) func() bool {
		return func() bool {
			st.s.mu.Lock()
			defer st.s.mu.Unlock()
			return st.s.stuck()
		}
	}
	n.dispatched(t)
	// Stuck, or (without the cap) the kernel took every event.
	eventually(t, patience, "the stream that never reads to be stuck", func() bool {
		return stuck(stalled)() || stalled.s.held.Load() == 0
	})
	eventually(t, patience, "the reader's socket to fill before it reads", stuck(reader))
	// One write may take a whole segment (64 KiB on loopback) past the cap.
	if q, limit := sockInt(t, stalled.s.conn, unsent), unsentLimit+64<<10; q > limit {
		t.Errorf("a stalled stream's socket holds %d bytes unsent, want at most %d", q, limit)
	}
	go func() { _, _ = io.Copy(io.Discard, cli) }()
	eventually(t, patience, "the reader to be known to read", func() bool {
		reader.s.mu.Lock()
		defer reader.s.mu.Unlock()
		return reader.s.reads
	})
	if got := sockInt(t, srv, unsentLowat); got != 0 {
		t.Errorf("TCP_NOTSENT_LOWAT %d on a stream known to read, want 0 (the system's default)", got)
	}
	stalled.s.mu.Lock()
	if stalled.s.reads {
		t.Error("the stream that never read counts as reading")
	}
	stalled.s.mu.Unlock()
}
