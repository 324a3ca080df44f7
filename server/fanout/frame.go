package fanout

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/refcast/refcast/bus"
)

// The SSE frame encoding: what the engine queues and what a stream's
// opening (replay, hello, reset, retry hint) is written with. It is one
// block so it can move, as it is, to the protocol package both ends share.

// EncodeEventFrame appends an SSE frame for an event. JSON never contains a
// raw CR or LF (encoding/json escapes them), so data cannot inject fields.
func EncodeEventFrame(dst []byte, name string, c Cursor, ev *bus.Event) []byte {
	data, err := json.Marshal(ev)
	if err != nil { // an Event always marshals; keep the stream well-formed anyway
		data = []byte(`{}`)
	}
	return AppendFrame(dst, name, c, data)
}

// AppendFrame appends "id:", "event:" and a single "data:" line.
func AppendFrame(dst []byte, name string, c Cursor, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = c.AppendEncode(dst)
	dst = append(dst, "\nevent: "...)
	dst = append(dst, name...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// RetryFrame tells the client when to reconnect.
func RetryFrame(d time.Duration) []byte {
	return []byte("retry: " + strconv.FormatInt(d.Milliseconds(), 10) + "\n\n")
}

// EventName is the SSE event name of an event: "sync" for a resync of a
// repo's refs, "ref" for a ref update.
func EventName(ev *bus.Event) string {
	if ev.Kind == bus.KindSync {
		return "sync"
	}
	return "ref"
}
