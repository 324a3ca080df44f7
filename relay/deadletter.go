package relay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/refcast/refcast/bus"
)

// DeadLetter is the content of a dead-letter file: what was sent, what
// came back, and why the relay gave up. Secrets are redacted (a token in
// the query or a token header); signatures are kept, they do not reveal
// the secret.
type DeadLetter struct {
	Target     string      `json:"target"`
	DeliveryID string      `json:"delivery_id"`
	Attempts   int         `json:"attempts"`
	Error      string      `json:"error"`
	Time       time.Time   `json:"time"`
	Event      bus.Event   `json:"event"`
	Reset      bool        `json:"reset,omitempty"`
	Request    *DLRequest  `json:"request,omitempty"`
	Response   *DLResponse `json:"response,omitempty"`
}

// DLRequest is the last request of a dead-lettered delivery.
type DLRequest struct {
	Method string      `json:"method"`
	URL    string      `json:"url"`
	Header http.Header `json:"header"`
	Body   string      `json:"body"`
}

// DLResponse is the last answer of a dead-lettered delivery.
type DLResponse struct {
	Status int    `json:"status"`
	Body   string `json:"body"` // the first 4 KiB
}

// redactedHeaders carry a secret as is.
var redactedHeaders = []string{"X-Gitlab-Token", "Authorization"}

// deadLetter writes the file DIR/<target>/<delivery id>.json atomically.
func (r *Relay) deadLetter(t *Target, u Update, id string, attempts int, res result) error {
	if r.opts.DeadLetter == "" {
		return nil
	}
	dl := DeadLetter{Target: t.Name, DeliveryID: id, Attempts: attempts, Error: res.errText(), Time: time.Now().UTC(), Event: u.Event, Reset: u.Reset}
	if res.req != nil {
		h := res.req.Header.Clone()
		for _, k := range redactedHeaders {
			if h.Get(k) != "" {
				h.Set(k, "REDACTED")
			}
		}
		dl.Request = &DLRequest{Method: res.req.Method, URL: redactQuery(res.req.URL.String()), Header: h, Body: string(res.body)}
	}
	if res.status != 0 {
		dl.Response = &DLResponse{Status: res.status, Body: string(res.respBody)}
	}
	b, err := json.MarshalIndent(dl, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Join(r.opts.DeadLetter, safeName(t.Name))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	path := filepath.Join(dir, id+".json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o640); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dead letter: %w", err)
	}
	return nil
}

// safeName makes a target name usable as one path element.
func safeName(s string) string {
	return strings.Map(func(c rune) rune {
		if c == '/' || c == '\\' || c == ':' || c < ' ' || c == '.' && s == ".." {
			return '_'
		}
		return c
	}, url.PathEscape(s))
}
