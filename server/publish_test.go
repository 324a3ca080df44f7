package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/refcast/refcast/server/fanout"
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
			frame := fanout.EncodeEventFrame(nil, fanout.EventName(&ev), fanout.Cursor{Seqs: []uint64{ev.Seq}}, &ev)
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
