package wire

import (
	"bytes"
	"slices"
	"strconv"
	"time"

	"github.com/refcast/refcast/bus"
)

// Heartbeat is the comment frame a node writes on an idle stream: SSE
// clients ignore it, and it keeps proxies and idle timeouts from closing
// the connection.
const Heartbeat = ": hb\n\n"

// EventName is the event name of a frame carrying ev.
func EventName(ev *bus.Event) string {
	if ev.Kind == bus.KindSync {
		return EventSync
	}
	return EventRef
}

// AppendEventFrame appends the SSE frame of an event: id c, event name,
// and ev as JSON on one data line. encoding/json never writes a raw CR or
// LF (it escapes them inside strings), so a repo, ref or commit subject
// cannot inject a field.
//
// It encodes into a pooled buffer and grows dst once to what the frame
// needs: json.Marshal's own buffer and dst's growth from nil through
// append's steps were two allocations of the event's size per frame (50
// MB of the 268 MB BenchmarkStalledReaders allocated).
func AppendEventFrame(dst []byte, name string, c Cursor, ev *bus.Event) []byte {
	jb := bus.GetJSONBuffer()
	defer jb.Release()
	data, err := jb.Encode(ev)
	if err != nil { // an Event always encodes; keep the stream well-formed anyway
		data = []byte(`{}`)
	}
	dst = slices.Grow(dst, len("id: \nevent: \ndata: \n\n")+len(name)+len(data)+maxEncodedLen(c))
	return AppendFrame(dst, name, c, data)
}

// maxEncodedLen bounds the length of c's encoding (AppendEncode): at most
// 2 + 14 bytes a partition, base64 4/3 of it, after the prefix.
func maxEncodedLen(c Cursor) int { return len(CursorPrefix) + (2+14*len(c.Seqs))*4/3 + 4 }

// AppendFrame appends a frame of "id:" (the encoded cursor, which is
// URL-safe), "event:" and "data:" lines. name must be one of the Event
// constants. data is meant to be one line of JSON; should it hold CR or LF
// anyway, each of its lines gets its own "data:" line, which an SSE client
// joins again with "\n", so no byte of data can start a field of its own.
// It allocates nothing beyond growing dst.
func AppendFrame(dst []byte, name string, c Cursor, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = c.AppendEncode(dst)
	dst = append(dst, "\nevent: "...)
	dst = append(dst, name...)
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			break
		}
		dst = append(dst, "\ndata: "...)
		dst = append(dst, data[:i]...)
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++ // CRLF is one line end
		}
		data = data[i+1:]
	}
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// AppendWithID appends frame, which AppendFrame or AppendEventFrame wrote
// (it starts with its "id:" line), with its id replaced by c: a frame
// already encoded, given another cursor without decoding or encoding its
// event again. Anything else (no "id: " line first) is appended
// unchanged: giving an id to a comment or a retry frame would move the
// client's Last-Event-ID.
func AppendWithID(dst, frame []byte, c Cursor) []byte {
	i := bytes.IndexByte(frame, '\n')
	if !bytes.HasPrefix(frame, []byte("id: ")) || i < 0 {
		return append(dst, frame...)
	}
	rest := frame[i+1:]
	dst = slices.Grow(dst, len(rest)+len("id: \n")+maxEncodedLen(c))
	dst = append(dst, "id: "...)
	dst = c.AppendEncode(dst)
	dst = append(dst, '\n')
	return append(dst, rest...)
}

// AppendRetry appends a frame that only tells the client how long to wait
// before reconnecting (SSE's "retry:", in milliseconds).
func AppendRetry(dst []byte, d time.Duration) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, d.Milliseconds(), 10)
	return append(dst, "\n\n"...)
}
