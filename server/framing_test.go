package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/wire"
)

// framingExchange writes reqs on one TCP connection and reads every response
// until the node closes it or a response leaves it open after the last.
// before, when not empty, is sent and answered first.
func framingExchange(t *testing.T, addr, before, reqs string, want int) (resps []*http.Response, bodies []string, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(patience))
	br := bufio.NewReader(conn)
	for i, w := range []string{before, reqs} {
		if w == "" {
			continue
		}
		if _, err := io.WriteString(conn, w); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("first request: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			resps, bodies = append(resps, resp), append(bodies, string(b))
		}
	}
	for len(resps) < want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return resps, bodies, true
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resps, bodies = append(resps, resp), append(bodies, string(b))
	}
	// Whatever else comes must be the end of the connection; a node that
	// keeps it open sends nothing more, which the short deadline ends.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	return resps, bodies, err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func chunked(body string) string {
	return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
}

// TestFramingSmugglingRefused: a request with both Content-Length and
// Transfer-Encoding gets 400 with Connection: close, and nothing after it
// on the connection is answered, whatever came before.
func TestFramingSmugglingRefused(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, nil)
	health := "GET " + wire.PathHealth + " HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct {
		name, before, reqs string
		oks                int // answers before the 400
	}{
		{"CL then TE", "", "POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked("{}") + health, 0},
		{"TE then CL, odd case", "", "POST /v1/publish HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-LENGTH: 0\r\n\r\n0\r\n\r\n" + health, 0},
		{"GET with both", "", "GET " + wire.PathHealth + " HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + health, 0},
		{"HTTP/1.0 with both", "", "POST /v1/publish HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}" + health, 0},
		{"after a chunked request", "POST /v1/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked("x"),
			"GET " + wire.PathHealth + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + health, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resps, bodies, closed := framingExchange(t, n.addr, tc.before, tc.reqs, tc.oks+1)
			if len(resps) != tc.oks+1 || !closed {
				t.Fatalf("got %d responses (closed %v), want %d and the connection closed", len(resps), closed, tc.oks+1)
			}
			for i, r := range resps[:tc.oks] {
				if r.Close || strings.Contains(bodies[i], "Transfer-Encoding") {
					t.Fatalf("earlier request refused or closed: %s", bodies[i])
				}
			}
			last := resps[tc.oks]
			if last.StatusCode != http.StatusBadRequest || !last.Close {
				t.Fatalf("status %d close %v, want 400 with Connection: close", last.StatusCode, last.Close)
			}
			if msg := apiErrorBody(t, http.StatusBadRequest, []byte(bodies[tc.oks])); !strings.Contains(msg, "both Content-Length and Transfer-Encoding") {
				t.Fatalf("message %q", msg)
			}
		})
	}
}

// TestFramingKeepAliveUntouched: well-framed requests, pipelined on one
// connection, are all answered and the connection stays open, even when a
// body holds text that looks like conflicting headers.
func TestFramingKeepAliveUntouched(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, nil)
	tricky := "x\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
	push, _ := json.Marshal(newPush("acme/app", upd("refs/heads/k", z, oid(1))))
	reqs := fmt.Sprintf("POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(tricky), tricky) +
		"POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testToken + "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: Content-Length\r\n\r\n", 3, push[:3], len(push)-3, push[3:]) +
		"GET " + wire.PathHealth + " HTTP/1.1\r\nHost: x\r\n\r\n"
	resps, bodies, closed := framingExchange(t, n.addr, "", reqs, 3)
	if len(resps) != 3 {
		t.Fatalf("got %d responses, want 3: %q", len(resps), bodies)
	}
	for i, want := range []int{http.StatusUnauthorized, http.StatusOK, http.StatusOK} {
		if resps[i].StatusCode != want || resps[i].Close {
			t.Fatalf("response %d: %d close %v %s, want %d kept open", i+1, resps[i].StatusCode, resps[i].Close, bodies[i], want)
		}
	}
	if !closed {
		return
	}
	t.Fatal("connection closed after well-framed requests")
}

// Pieces the scanner tests feed.
var framingSeeds = []string{
	"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
	"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n\r\n",
	"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\nGET / HTTP/1.1\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET / HTTP/1.1\nX: a\n Content-Length: 1\nTransfer-Encoding: chunked\n\n",
}

func TestFramingScanner(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		in       string
		conflict bool
		requests int
	}{
		{"plain", framingSeeds[0] + framingSeeds[0], false, 2},
		{"both", framingSeeds[1], true, 1},
		{"body is skipped", fmt.Sprintf("POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s", len(framingSeeds[1]), framingSeeds[1]) + framingSeeds[0], false, 2},
		{"chunks and trailers", framingSeeds[3], false, 2},
		{"HTTP/1.0 ignores TE", framingSeeds[4], false, 2},
		{"HTTP/2 preface", framingSeeds[5] + framingSeeds[1], false, 0},
		{"continuation line is no header", "GET / HTTP/1.1\r\nX: a\r\n Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, 1},
		{"bare LF", "GET / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n", true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for split := 0; split <= len(tc.in); split++ {
				var s framingScanner
				s.scan([]byte(tc.in[:split]))
				s.scan([]byte(tc.in[split:]))
				if s.conflict != tc.conflict || s.requests != tc.requests {
					t.Fatalf("split at %d: conflict %v requests %d, want %v %d", split, s.conflict, s.requests, tc.conflict, tc.requests)
				}
			}
		})
	}
}

// FuzzFramingScanner: never panics, and what it finds does not depend on
// how the stream is cut into reads.
func FuzzFramingScanner(f *testing.F) {
	for i, s := range framingSeeds {
		f.Add([]byte(s), uint16(i*7))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		var whole, parts framingScanner
		whole.scan(in)
		step := int(cut)%7 + 1
		for i := 0; i < len(in); i += step {
			parts.scan(in[i:min(i+step, len(in))])
		}
		if whole.conflict != parts.conflict || whole.requests != parts.requests || whole.state != parts.state {
			t.Fatalf("whole %+v, in %d-byte reads %+v", whole, step, parts)
		}
	})
}
