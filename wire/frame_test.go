package wire

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/refcast/refcast/bus"
)

// TestFrameBytes pins the bytes of each frame kind: clients in the field
// parse exactly these.
func TestFrameBytes(t *testing.T) {
	t.Parallel()
	c := Cursor{Epoch: 7, Seqs: []uint64{42, 0}}
	ev := &bus.Event{V: 1, Repo: "acme/app", Ref: "refs/heads/main", Old: strings.Repeat("1", 40), New: strings.Repeat("2", 40),
		Kind: bus.KindUpdate, PushID: "p1", Time: time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC), Source: "api"}
	data, _ := json.Marshal(ev)
	cases := []struct{ name, got, want string }{
		{"event", string(AppendEventFrame(nil, EventName(ev), c, ev)), "id: " + c.Encode() + "\nevent: ref\ndata: " + string(data) + "\n\n"},
		{"sync", EventName(&bus.Event{Kind: bus.KindSync}), "sync"},
		{"hello", string(AppendFrame(nil, EventHello, c, []byte(`{"cursor":"x"}`))), "id: c2AgAAAAcqAAAAAAA\nevent: hello\ndata: {\"cursor\":\"x\"}\n\n"},
		{"retry", string(AppendRetry(nil, 2500*time.Millisecond)), "retry: 2500\n\n"},
		{"heartbeat", Heartbeat, ": hb\n\n"},
		{"append keeps dst", string(AppendFrame([]byte("x"), EventHello, c, nil)), "xid: c2AgAAAAcqAAAAAAA\nevent: hello\ndata: \n\n"},
		{"another id", string(AppendWithID([]byte("x"), AppendFrame(nil, EventHello, Cursor{Seqs: []uint64{1}}, nil), c)), "xid: c2AgAAAAcqAAAAAAA\nevent: hello\ndata: \n\n"},
		{"no id line: unchanged", string(AppendWithID([]byte("x"), []byte(Heartbeat), c)), "x" + Heartbeat},
		{"no line end: unchanged", string(AppendWithID(nil, []byte("id: abc"), c)), "id: abc"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, tc.got, tc.want)
		}
	}
}

// TestPayloadBytes: the payload types write the bytes the node wrote with
// maps before they existed (keys in alphabetical order).
func TestPayloadBytes(t *testing.T) {
	t.Parallel()
	repos := []RepoRefs{{Repo: "acme/app", Refs: map[string]string{"refs/heads/main": "abc"}}}
	changes := []Change{{Repo: "acme/app", Ref: "refs/heads/main", Old: "a", New: "b", Kind: bus.KindUpdate}}
	cases := []struct {
		name      string
		typed, as any
	}{
		{"hello", Hello{Cursor: "c1x"}, map[string]string{"cursor": "c1x"}},
		{"reset", Reset{Cursor: "c1x", Reason: "lost <history>", Repos: repos}, map[string]any{"reason": "lost <history>", "cursor": "c1x", "repos": repos}},
		{"snapshot", Snapshot{Cursor: "c1x", Repos: repos}, map[string]any{"cursor": "c1x", "repos": repos}},
		{"snapshot reset", Snapshot{Cursor: "c1x", Repos: repos, Reset: true}, map[string]any{"cursor": "c1x", "repos": repos, "reset": true}},
		{"delta", Delta{Changes: changes, Cursor: "c1y", Since: "c1x"}, map[string]any{"cursor": "c1y", "since": "c1x", "reset": false, "changes": changes}},
		{"published", Published{Published: 3}, map[string]any{"published": 3}},
		{"error", Error{Error: "bad", Status: 400}, map[string]any{"error": "bad", "status": 400}},
	}
	for _, tc := range cases {
		got, _ := json.Marshal(tc.typed)
		want, _ := json.Marshal(tc.as)
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, want)
		}
	}
}

// TestAppendFrameAllocations: a frame written into a buffer with room
// costs no allocation (a node encodes one per event and one per cursor
// moved on a resumed stream).
func TestAppendFrameAllocations(t *testing.T) {
	c := Cursor{Epoch: 1, Seqs: make([]uint64, bus.MaxPartitions)}
	for i := range c.Seqs {
		c.Seqs[i] = uint64(i) << 40
	}
	data := []byte(`{"repo":"acme/app"}`)
	buf := make([]byte, 0, MaxCursorLen+1024)
	if n := testing.AllocsPerRun(20, func() { buf = AppendFrame(buf[:0], EventRef, c, data) }); n != 0 {
		t.Errorf("AppendFrame: %v allocations", n)
	}
}

// sseField is one field line of a frame as an SSE client parses it.
type sseField struct{ name, value string }

// parseFrame splits one frame by the SSE rules (lines end at CR, LF or
// CRLF; "name: value" with one optional space).
func parseFrame(t *testing.T, b []byte) []sseField {
	t.Helper()
	s := string(b)
	if !strings.HasSuffix(s, "\n\n") {
		t.Fatalf("frame %q does not end with a blank line", s)
	}
	s = strings.TrimSuffix(s, "\n\n")
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
	var out []sseField
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			t.Fatalf("frame %q holds a blank line: it would end early", b)
		}
		name, value, _ := strings.Cut(line, ":")
		out = append(out, sseField{name, strings.TrimPrefix(value, " ")})
	}
	return out
}

// FuzzAppendFrame: whatever the data, a frame parses to one id (the
// cursor), one event (the name), and data lines that join back to the
// data with its line ends made "\n"; nothing else.
func FuzzAppendFrame(f *testing.F) {
	f.Add([]byte(`{"a":1}`), uint32(1), uint64(2))
	f.Add([]byte("x\nid: evil\n\nevent: reset"), uint32(0), uint64(0))
	f.Add([]byte("a\r\nb\rc\n"), uint32(3), uint64(1<<60))
	f.Add([]byte("\r"), uint32(3), uint64(5))
	f.Fuzz(func(t *testing.T, data []byte, epoch uint32, seq uint64) {
		c := Cursor{Epoch: epoch, Seqs: []uint64{seq, seq / 2}}
		fields := parseFrame(t, AppendFrame(nil, EventRef, c, data))
		if len(fields) < 3 || fields[0] != (sseField{"id", c.Encode()}) || fields[1] != (sseField{"event", EventRef}) {
			t.Fatalf("frame fields %q", fields)
		}
		var lines []string
		for _, fl := range fields[2:] {
			if fl.name != "data" {
				t.Fatalf("data %q injected a %q field", data, fl.name)
			}
			lines = append(lines, fl.value)
		}
		want := strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n")
		if got := strings.Join(lines, "\n"); got != want {
			t.Fatalf("data %q came back as %q", data, got)
		}
		// Another id, spliced in, gives the frame encoded with it.
		other := Cursor{Epoch: epoch + 1, Seqs: []uint64{seq / 3, seq, 7}, Checks: []uint32{epoch, 1, 2}}
		if got, want := AppendWithID(nil, AppendFrame(nil, EventRef, c, data), other), AppendFrame(nil, EventRef, other, data); !bytes.Equal(got, want) {
			t.Fatalf("AppendWithID:\n got %q\nwant %q", got, want)
		}
	})
}

// FuzzAppendEventFrame: any event, whatever its strings hold, is one
// frame with a single data line that decodes back to the event.
func FuzzAppendEventFrame(f *testing.F) {
	f.Add("acme/app", "refs/heads/main", "fix\r\nevent: reset\n\ndata: x", "alice")
	f.Add("", "", "", "")
	f.Add("a\u2028b", "refs/\x00", "\x7f", "é")
	f.Fuzz(func(t *testing.T, repo, ref, subject, pusher string) {
		ev := &bus.Event{V: 1, Repo: repo, Ref: ref, Kind: bus.KindCreate, Pusher: pusher, Commit: &bus.Commit{Subject: subject}}
		fields := parseFrame(t, AppendEventFrame(nil, EventName(ev), Cursor{Seqs: []uint64{1}}, ev))
		if len(fields) != 3 || fields[0].name != "id" || fields[1] != (sseField{"event", EventRef}) || fields[2].name != "data" {
			t.Fatalf("frame fields %q", fields)
		}
		// Another id, spliced in, gives the frame encoded with it.
		other := Cursor{Epoch: 9, Seqs: []uint64{uint64(len(subject)), 7}, Checks: []uint32{3, 4}}
		if got, want := AppendWithID(nil, AppendEventFrame(nil, EventName(ev), Cursor{Seqs: []uint64{1}}, ev), other), AppendEventFrame(nil, EventName(ev), other, ev); !bytes.Equal(got, want) {
			t.Fatalf("AppendWithID:\n got %q\nwant %q", got, want)
		}
		var back bus.Event
		if err := json.Unmarshal([]byte(fields[2].value), &back); err != nil {
			t.Fatalf("data %q: %v", fields[2].value, err)
		}
		if utf8.ValidString(repo) && back.Repo != repo { // json.Marshal replaces invalid UTF-8
			t.Fatalf("repo %q came back as %q", repo, back.Repo)
		}
	})
}
