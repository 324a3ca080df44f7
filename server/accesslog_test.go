package server

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/refcast/refcast/bus/memory"
)

// lockedBuffer is a log sink the node's goroutines may write concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines parses every line written as JSON.
func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startLoggedTestNode(t *testing.T, accessLog bool) (*testNode, *lockedBuffer) {
	var buf lockedBuffer
	n := startNode(t, newBus(t, memory.Options{}), 0, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&buf, nil))
		o.AccessLog = accessLog
		o.Subject = func(tok string) string {
			if tok == testToken {
				return "the-publisher"
			}
			return ""
		}
	})
	return n, &buf
}

// TestAccessLog: with AccessLog on, a request is one line with its method,
// path, status, duration, bytes and remote address, and the query without
// the access_token (nor any token-, secret- or password-named parameter).
func TestAccessLog(t *testing.T) {
	n, buf := startLoggedTestNode(t, true)
	status, _, _ := n.get(t, "/healthz?access_token=tok-in-query-123&client_secret=s3cr3t-456&repo=acme%2Fapp", nil)
	if status != 200 {
		t.Fatalf("/healthz = %d", status)
	}
	var line map[string]any
	for _, l := range buf.lines(t) {
		if l["path"] == "/healthz" {
			line = l
		}
	}
	if line == nil {
		t.Fatalf("no access line for /healthz:\n%s", buf)
	}
	if line["msg"] != "request" || line["method"] != "GET" || line["status"] != float64(200) || line["query"] != "repo=acme%2Fapp" {
		t.Errorf("access line: %v", line)
	}
	if _, ok := line["duration"].(string); !ok {
		t.Errorf("duration %v is not a string", line["duration"])
	}
	if b, _ := line["bytes"].(float64); b <= 0 {
		t.Errorf("bytes %v", line["bytes"])
	}
	if line["remote"] != "127.0.0.1" {
		t.Errorf("remote %v", line["remote"])
	}
	if s := buf.String(); strings.Contains(s, "tok-in-query-123") || strings.Contains(s, "s3cr3t-456") {
		t.Errorf("a credential reached the log:\n%s", s)
	}
}

// TestDeniedLoggedWithoutAccessLog: a 401 is logged at info with its reason
// although the access log is off; a request that succeeds is not.
func TestDeniedLoggedWithoutAccessLog(t *testing.T) {
	n, buf := startLoggedTestNode(t, false)
	if status, _, _ := n.get(t, "/healthz", nil); status != 200 {
		t.Fatalf("/healthz = %d", status)
	}
	status, _, _ := n.publishRaw(t, "wrong-token-789", "application/json", []byte(`{}`))
	if status != 401 {
		t.Fatalf("publish with a wrong token = %d, want 401", status)
	}
	var denied []map[string]any
	for _, l := range buf.lines(t) {
		if l["path"] == "/healthz" {
			t.Errorf("a 200 was logged with the access log off: %v", l)
		}
		if l["msg"] == "request denied" {
			denied = append(denied, l)
		}
	}
	if len(denied) != 1 || denied[0]["level"] != "INFO" || denied[0]["status"] != float64(401) ||
		!strings.Contains(denied[0]["reason"].(string), "wrong publish token") {
		t.Fatalf("denied lines: %v\n%s", denied, buf)
	}
	if strings.Contains(buf.String(), "wrong-token-789") {
		t.Errorf("the token reached the log:\n%s", buf)
	}
}

func TestLoggedQuery(t *testing.T) {
	for raw, want := range map[string]string{
		"":                                 "",
		"repo=a&access_token=x":            "repo=a",
		"TOKEN=x&Password=y&apikey=z&b=1":  "b=1",
		"%zz":                              "(unparsable)",
		"repo=a&repo=b&since=1":            "repo=a&repo=b&since=1",
		"id_token=x&refresh_token=y&wait=": "wait=",
	} {
		if got := loggedQuery(raw); got != want {
			t.Errorf("loggedQuery(%q) = %q, want %q", raw, got, want)
		}
	}
}

// FuzzLoggedQuery: whatever the query, no parameter whose name looks like
// a credential survives, and the result is bounded.
func FuzzLoggedQuery(f *testing.F) {
	f.Add("repo=a&access_token=x")
	f.Add("a%3Dtoken=1&%61ccess_token=2")
	f.Fuzz(func(t *testing.T, raw string) {
		got := loggedQuery(raw)
		if len(got) > maxLoggedQuery+len("…") {
			t.Fatalf("%d bytes", len(got))
		}
		if got == "(unparsable)" || strings.HasSuffix(got, "…") {
			return
		}
		q, err := url.ParseQuery(got)
		if err != nil {
			t.Fatalf("output %q does not parse: %v", got, err)
		}
		for k := range q {
			if secretParam(k) {
				t.Fatalf("%q kept parameter %q", raw, k)
			}
		}
	})
}
