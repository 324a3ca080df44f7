package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"sync"

	"github.com/refcast/refcast/wire"
)

// A request with both Content-Length and Transfer-Encoding is how request
// smuggling starts: a proxy in front that frames it by Content-Length and
// this node, which frames it as chunked (RFC 9112 6.3), disagree on where
// the next request begins. RFC 9112 says such a message "ought to be
// handled as an error"; a node behind proxies it does not know refuses it
// with 400 and closes the connection, so nothing after it is read.
//
// Why a connection wrapper and not a plain middleware: net/http (Go 1.26,
// transfer.go fixLength and parseTransferEncoding) deletes Content-Length
// from a chunked request's header, and Transfer-Encoding from an HTTP/1.0
// request's, before any handler runs; r.ContentLength is -1 either way. No
// handler can tell that a request had both. So framingConn watches the
// bytes net/http reads from the socket and follows HTTP/1.1 message framing
// (header blocks, Content-Length bodies, chunks and trailers) just far
// enough to see each request's header names; checkFraming, at the top of
// the handler chain, asks the request's connection. A body that merely
// contains header-like text is skipped, not mistaken for a request.
//
// Once a connection has sent such a request, every request still to be
// answered on it is refused: with pipelining, net/http may read the bad
// request while an earlier one is being served, and which request a
// handler holds cannot be told from the bytes. A client that pipelines
// behind a smuggling attempt loses nothing it could rely on.
//
// The watch costs each connection one small struct and no goroutine, and
// stops at an HTTP/2 preface (HTTP/2 has no such framing conflict) or at
// the first conflict. TLS connections are not wrapped (net/http must see
// the *tls.Conn, and this node is served in plain text behind its
// balancer); Handler used without Serve has no connection to ask and
// checks nothing.

// framingListener wraps accepted connections in framingConn.
type framingListener struct{ net.Listener }

func (l framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	if _, ok := c.(*tls.Conn); ok {
		return c, nil
	}
	return &framingConn{Conn: c}, nil
}

// framingConn is a connection whose reads are scanned for framing
// conflicts.
type framingConn struct {
	net.Conn
	mu sync.Mutex     // net/http reads from its conn goroutine and its background reader
	sc framingScanner // guarded by mu
}

func (c *framingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		c.sc.scan(b[:n])
		c.mu.Unlock()
	}
	return n, err
}

// conflicted reports whether a request on c had both Content-Length and
// Transfer-Encoding.
func (c *framingConn) conflicted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sc.conflict
}

// unwrapFramingConn returns the connection under c's framing watch. A
// hijacked stream's owner needs it: the fan-out engine writes through the
// socket's syscall.Conn and sets TCP keep-alives on the *net.TCPConn, and
// no further request is read from a hijacked connection.
func unwrapFramingConn(c net.Conn) net.Conn {
	if fc, ok := c.(*framingConn); ok {
		return fc.Conn
	}
	return c
}

type framingConnKey struct{}

// framingConnContext is http.Server.ConnContext: it lets checkFraming find
// the request's connection.
func framingConnContext(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := c.(*framingConn); ok {
		return context.WithValue(ctx, framingConnKey{}, fc)
	}
	return ctx
}

// errFramingConflict is the message a refused request gets.
const errFramingConflict = "request has both Content-Length and Transfer-Encoding (or follows one on this connection); send one of them"

// checkFraming refuses, with 400 and Connection: close, every HTTP/1
// request on a connection that has sent a request with both framing
// headers.
func checkFraming(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fc, _ := r.Context().Value(framingConnKey{}).(*framingConn); fc != nil && r.ProtoMajor == 1 && fc.conflicted() {
			// Connection: close makes net/http close the connection after
			// this answer without reading the rest of the body.
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(wire.Error{Error: errFramingConflict, Status: http.StatusBadRequest})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// framingScanner follows HTTP/1.x request framing over a byte stream fed
// in pieces of any size. It keeps no line buffer: a few bytes of each
// header name and counters, so its memory is fixed. Where net/http would
// refuse the input (a bad chunk size, two different Content-Lengths) it
// stops: net/http answers 400 and closes the connection itself.
type framingScanner struct {
	state    uint8
	conflict bool // a header block had both Content-Length and Transfer-Encoding
	requests int  // header blocks seen

	// Current line.
	lineLen int     // bytes so far, CR included
	first   byte    // the line's first byte
	head    [4]byte // a request line's first bytes ("PRI " is HTTP/2)
	tail    [9]byte // a request line's last bytes ("HTTP/1.0" and maybe CR)
	name    [len("transfer-encoding") + 1]byte
	nameLen int
	inValue bool // past the header's ':'
	cont    bool // a continuation line (starts with space or tab)
	num     int64
	digits  int
	numBad  bool

	// Current header block.
	http10       bool
	hasCL, hasTE bool
	cl           int64
	remain       int64 // body or chunk bytes still to skip
}

const (
	fsRequestLine = iota
	fsHeader
	fsBody
	fsChunkSize
	fsChunkData
	fsChunkEnd
	fsTrailer
	fsOff // HTTP/2, a conflict, or input net/http refuses
)

// maxFramingNumber bounds Content-Length and chunk sizes the scanner
// follows (net/http refuses more than 16 hex digits anyway).
const maxFramingNumber = 1 << 62

func (s *framingScanner) scan(b []byte) {
	for len(b) > 0 {
		switch s.state {
		case fsOff:
			return
		case fsBody, fsChunkData:
			n := int64(len(b))
			if n > s.remain {
				n = s.remain
			}
			s.remain -= n
			b = b[n:]
			if s.remain == 0 {
				if s.state == fsBody {
					s.state = fsRequestLine
				} else {
					s.state = fsChunkEnd
				}
			}
		default:
			c := b[0]
			b = b[1:]
			if c == '\n' {
				s.endLine()
			} else {
				s.lineByte(c)
			}
		}
	}
}

func (s *framingScanner) lineByte(c byte) {
	pos := s.lineLen
	s.lineLen++
	if pos == 0 {
		s.first = c
	}
	switch s.state {
	case fsRequestLine:
		if pos < len(s.head) {
			s.head[pos] = c
		}
		copy(s.tail[:], s.tail[1:])
		s.tail[len(s.tail)-1] = c
	case fsHeader, fsTrailer:
		switch {
		case pos == 0 && (c == ' ' || c == '\t'):
			s.cont = true
		case s.cont:
		case !s.inValue && c == ':':
			s.inValue = true
		case !s.inValue:
			if s.nameLen < len(s.name) {
				s.name[s.nameLen] = lower(c)
			}
			s.nameLen++
		case s.isName("content-length"):
			s.number(c, 10)
		}
	case fsChunkSize:
		if s.inValue || c == ';' || c == ' ' || c == '\t' || c == '\r' {
			s.inValue = true // extension or white space: the size has ended
			return
		}
		s.number(c, 16)
	}
}

// number adds digit c to the line's number in base 10 or 16, skipping
// white space and CR.
func (s *framingScanner) number(c byte, base int64) {
	var d int64
	switch {
	case c == ' ' || c == '\t' || c == '\r':
		return
	case c >= '0' && c <= '9':
		d = int64(c - '0')
	case base == 16 && lower(c) >= 'a' && lower(c) <= 'f':
		d = int64(lower(c)-'a') + 10
	default:
		s.numBad = true
		return
	}
	if s.num > maxFramingNumber/base {
		s.numBad = true
		return
	}
	s.num = s.num*base + d
	s.digits++
}

func (s *framingScanner) endLine() {
	empty := s.lineLen == 0 || (s.lineLen == 1 && s.first == '\r')
	switch s.state {
	case fsRequestLine:
		switch {
		case empty: // net/http refuses it; nothing to follow
		case string(s.head[:]) == "PRI ":
			s.state = fsOff // the HTTP/2 preface
		default:
			t := string(s.tail[:])
			s.http10 = t[1:] == "HTTP/1.0" || t[:8] == "HTTP/1.0"
			s.hasCL, s.hasTE, s.cl = false, false, 0
			s.state = fsHeader
		}
	case fsHeader:
		switch {
		case empty:
			s.endHeaders()
		case s.cont:
		case s.isName("content-length"):
			if s.numBad || s.digits == 0 || (s.hasCL && s.cl != s.num) {
				s.state = fsOff // net/http refuses it
				break
			}
			s.hasCL, s.cl = true, s.num
		case s.isName("transfer-encoding"):
			s.hasTE = true
		}
	case fsChunkSize:
		switch {
		case s.numBad || s.digits == 0:
			s.state = fsOff // net/http refuses it
		case s.num == 0:
			s.state = fsTrailer
		default:
			s.remain, s.state = s.num, fsChunkData
		}
	case fsChunkEnd:
		s.state = fsChunkSize
	case fsTrailer:
		if empty {
			s.state = fsRequestLine
		}
	}
	s.lineLen, s.nameLen, s.inValue, s.cont = 0, 0, false, false
	s.num, s.digits, s.numBad = 0, 0, false
	s.tail = [len(s.tail)]byte{}
	s.head = [len(s.head)]byte{}
}

func (s *framingScanner) endHeaders() {
	s.requests++
	switch {
	case s.hasCL && s.hasTE:
		s.conflict, s.state = true, fsOff
	case s.hasTE && !s.http10: // net/http ignores Transfer-Encoding in HTTP/1.0
		s.state = fsChunkSize
	case s.hasCL && s.cl > 0:
		s.remain, s.state = s.cl, fsBody
	default:
		s.state = fsRequestLine
	}
}

func (s *framingScanner) isName(n string) bool {
	return s.nameLen == len(n) && string(s.name[:s.nameLen]) == n
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
