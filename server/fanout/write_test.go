package fanout

import (
	"bytes"
	"io"
	"net"
	"syscall"
	"testing"
)

func TestWriteNow(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c)
		c.Close()
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for round := range 50 {
		var bufs net.Buffers
		for i := range 1500 { // more than one writev's worth of buffers
			b := bytes.Repeat([]byte{byte('a' + (round+i)%26)}, 1+i%7)
			if i%100 == 0 {
				b = nil // empty buffers are skipped
			}
			bufs = append(bufs, b)
			want = append(want, b...)
		}
		for len(bufs) > 0 {
			n, err := writeNow(raw, &bufs)
			if err != nil && err != errWouldBlock {
				t.Fatal(err)
			}
			_ = n
		}
	}
	c.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("received %d bytes, want %d (equal prefix %d)", len(b), len(want), commonPrefix(b, want))
	}
}

func commonPrefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// BenchmarkSendCall compares the system call a writer uses for one frame
// to each of 1,000 loopback streams (a fan-out): send/sendmsg against
// writev, side by side. ns/op is per frame written.
func BenchmarkSendCall(b *testing.B) {
	const conns = 1000
	var raws []syscall.RawConn
	for range conns {
		raws = append(raws, readStream(b))
	}
	frame := bytes.Repeat([]byte("x"), 290)
	for _, tc := range []struct {
		name    string
		sendmsg bool
	}{{"writev", false}, {"sendmsg", true}, {"writev-again", false}, {"sendmsg-again", true}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				bufs := net.Buffers{frame}
				if _, err := writeNowWith(raws[i%conns], &bufs, tc.sendmsg); err != nil && err != errWouldBlock {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// TestWriteNowAllocates: a write allocates nothing, so a fan-out costs no
// garbage per stream.
func TestWriteNowAllocates(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items at random)")
	}
	raw := readStream(t)
	frame := bytes.Repeat([]byte("x"), 290)
	bufs := make(net.Buffers, 0, 4)
	for _, n := range []int{1, 3} { // send and sendmsg
		allocs := testing.AllocsPerRun(200, func() {
			bufs = bufs[:0]
			for range n {
				bufs = append(bufs, frame)
			}
			rest := bufs
			if _, err := writeNow(raw, &rest); err != nil && err != errWouldBlock {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("writeNow of %d buffers: %v allocations per write, want 0", n, allocs)
		}
	}
}

// readStream returns the server side of a loopback TCP connection whose
// client reads and discards everything; both ends close with the test.
func readStream(tb testing.TB) syscall.RawConn {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	peer, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = peer.Close() })
	go func() { _, _ = io.Copy(io.Discard, c) }() // ends when c is closed
	raw, err := peer.(syscall.Conn).SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}
