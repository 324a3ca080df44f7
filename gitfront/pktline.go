package gitfront

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// pkt-line framing, as gitprotocol-common defines it: four hex digits
// giving the packet's whole length (the four included), then the payload.
// Lengths 0000, 0001 and 0002 are the flush, delimiter and response-end
// packets (0001 and 0002 only in protocol v2); 0003 is never valid.
const (
	// MaxPktLen is the longest packet, length prefix included (65520 =
	// LARGE_PACKET_MAX in git), and MaxPktPayload the most data one holds.
	MaxPktLen     = 65520
	MaxPktPayload = MaxPktLen - 4
)

// Kind tells a data packet from the special ones.
type Kind int

// Packet kinds.
const (
	Data        Kind = iota // a payload, possibly empty (0004)
	Flush                   // 0000: end of a message
	Delim                   // 0001: end of a section (v2)
	ResponseEnd             // 0002: end of a response (v2 stateless)
)

// ErrPktLine wraps every malformed packet: a client sent something that is
// not git's protocol, answered with 400.
var ErrPktLine = errors.New("malformed pkt-line")

// Special packets, ready to write.
var (
	flushPkt = []byte("0000")
	delimPkt = []byte("0001")
)

// AppendPkt appends payload framed as one data packet. It panics past
// MaxPktPayload: every caller writes lines it built (a ref name is at most
// bus.MaxRefLen bytes), so a longer one is a bug, not input.
func AppendPkt(dst []byte, payload ...string) []byte {
	n := 4
	for _, p := range payload {
		n += len(p)
	}
	if n > MaxPktLen {
		panic(fmt.Sprintf("gitfront: packet of %d bytes exceeds %d", n, MaxPktLen))
	}
	const hex = "0123456789abcdef"
	dst = append(dst, hex[n>>12&15], hex[n>>8&15], hex[n>>4&15], hex[n&15])
	for _, p := range payload {
		dst = append(dst, p...)
	}
	return dst
}

// PktReader reads packets from a stream.
type PktReader struct {
	r   *bufio.Reader
	buf [MaxPktPayload]byte
}

// NewPktReader reads packets from r, buffered.
func NewPktReader(r io.Reader) *PktReader {
	return &PktReader{r: bufio.NewReaderSize(r, 4096)}
}

// Next returns the next packet. The payload is valid until the next call.
// A stream that ends between packets returns io.EOF; one that ends inside a
// packet, a bad length or a length over MaxPktLen an ErrPktLine error.
func (p *PktReader) Next() (Kind, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: stream ends inside a length prefix", ErrPktLine)
		}
		return 0, nil, err
	}
	n, err := parseLen(hdr)
	if err != nil {
		return 0, nil, err
	}
	switch n {
	case 0:
		return Flush, nil, nil
	case 1:
		return Delim, nil, nil
	case 2:
		return ResponseEnd, nil, nil
	case 3:
		return 0, nil, fmt.Errorf("%w: length 0003 is not a valid packet", ErrPktLine)
	}
	if n > MaxPktLen {
		return 0, nil, fmt.Errorf("%w: packet length %d exceeds %d", ErrPktLine, n, MaxPktLen)
	}
	data := p.buf[:n-4]
	if _, err := io.ReadFull(p.r, data); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: stream ends inside a packet of length %d", ErrPktLine, n)
		}
		return 0, nil, err
	}
	return Data, data, nil
}

func parseLen(h [4]byte) (int, error) {
	n := 0
	for _, c := range h {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("%w: length prefix %q is not four hex digits", ErrPktLine, h[:])
		}
		n = n<<4 | int(d)
	}
	return n, nil
}

// trimLF drops the one trailing newline git puts on text packets (it is
// optional: gitprotocol-common says receivers must not depend on it).
func trimLF(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		return b[:len(b)-1]
	}
	return b
}
