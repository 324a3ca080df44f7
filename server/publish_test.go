package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/wire"
)

// FuzzPublishBody: whatever a publisher sends, decoding and validation never
// panic, and a push they accept becomes SSE frames with exactly one data
// line each, so no field of a push can inject SSE fields or events.
func FuzzPublishBody(f *testing.F) {
	a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	for _, s := range []string{
		`{"id":"p1","repo":"acme/app","time":"2026-11-25T14:00:00Z","updates":[{"ref":"refs/heads/main","old":"` + a + `","new":"` + b + `"}]}`,
		`{"id":"p2","repo":"acme/app","time":"2026-11-25T14:00:00Z","pusher":"eve\ndata: x","updates":[{"ref":"refs/heads/x","old":"` + a + `","new":"` + b + `","commit":{"subject":"s\r\nevent: reset","author":"a"}}]}`,
		`{"id":"s","repo":"acme/app","time":"2026-11-25T14:00:00Z","seed":true,"updates":[{"ref":"refs/tags/v1","new":"` + b + `"}]}`,
		`{}`, `[]`, `{"id":1}`, `{"repo":"../x"}`, `{"id":"p","repo":"a","time":"x"} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodePush(body)
		if err != nil {
			return
		}
		if p.Validate() != nil {
			return
		}
		for i, ev := range p.Events() {
			ev.Partition, ev.Seq = 0, uint64(i+1)
			frame := wire.AppendEventFrame(nil, wire.EventName(&ev), wire.Cursor{Seqs: []uint64{ev.Seq}}, &ev)
			lines := strings.Split(strings.TrimSuffix(string(frame), "\n\n"), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "id: ") || !strings.HasPrefix(lines[1], "event: ") || !strings.HasPrefix(lines[2], "data: ") {
				t.Fatalf("frame is not id/event/data lines: %q", frame)
			}
			if bytes.ContainsRune(frame[:len(frame)-2], '\r') {
				t.Fatalf("frame contains CR: %q", frame)
			}
			var back map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "data: ")), &back); err != nil {
				t.Fatalf("data is not JSON: %v", err)
			}
		}
	})
}

// TestPublishAuthorizationScheme: publishing reads the Authorization
// header with the protocol's one parser, so the scheme is
// case-insensitive as it is for reads (RFC 7235); other schemes and
// malformed values are refused.
func TestPublishAuthorizationScheme(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, nil)
	cases := []struct {
		name, header string
		want         int
	}{
		{"canonical", "Bearer " + testToken, http.StatusOK},
		{"lower case", "bearer " + testToken, http.StatusOK},
		{"upper case", "BEARER " + testToken, http.StatusOK},
		{"two spaces", "Bearer  " + testToken, http.StatusOK},
		{"basic", "Basic " + testToken, http.StatusUnauthorized},
		{"no space", "Bearer" + testToken, http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(newPush("acme/app", upd(fmt.Sprintf("refs/heads/b%d", i), z, oid(i+1))))
			req, _ := http.NewRequest(http.MethodPost, n.url+wire.PathPublish, bytes.NewReader(body))
			req.Header.Set(wire.HeaderAuthorization, tc.header)
			req.Header.Set("Content-Type", "application/json")
			if st, _, resp := do(t, req); st != tc.want {
				t.Fatalf("Authorization %q: %d %s, want %d", tc.header, st, resp, tc.want)
			}
		})
	}
}
