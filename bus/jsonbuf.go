package bus

import (
	"bytes"
	"encoding/json"
	"sync"
)

// JSONBuffer encodes events as JSON into a pooled scratch buffer, for
// callers that copy the bytes into a buffer of their own at once (an SSE
// frame, a stored record): json.Marshal allocates a buffer of the event's
// size per call, which they would then copy and drop.
type JSONBuffer struct{ b bytes.Buffer }

// jsonBuffers holds JSONBuffers for reuse; one that grew past
// maxPooledJSON (an event with a large enrichment) is not kept.
var jsonBuffers = sync.Pool{New: func() any { return new(JSONBuffer) }}

const maxPooledJSON = 64 << 10

// GetJSONBuffer takes a JSONBuffer from the pool; Release it when done.
func GetJSONBuffer() *JSONBuffer { return jsonBuffers.Get().(*JSONBuffer) }

// Encode returns e as JSON, the bytes json.Marshal would, valid until the
// next Encode or Release.
func (j *JSONBuffer) Encode(e *Event) ([]byte, error) {
	j.b.Reset()
	if err := json.NewEncoder(&j.b).Encode(e); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(j.b.Bytes(), []byte("\n")), nil // Encode ends with a newline, Marshal does not
}

// Release returns j to the pool; its bytes must not be used after.
func (j *JSONBuffer) Release() {
	if j.b.Cap() <= maxPooledJSON {
		jsonBuffers.Put(j)
	}
}
