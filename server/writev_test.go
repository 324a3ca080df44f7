package server

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
