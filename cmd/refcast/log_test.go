package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// TestLogDurationsAsStrings: both formats write a duration as "1.5s", not
// as a count of nanoseconds.
func TestLogDurationsAsStrings(t *testing.T) {
	for format, want := range map[string]string{"text": "drain=1.5s", "json": `"drain":"1.5s"`} {
		env, _, errb := wtEnv(nil)
		log, err := newLogger("info", format, env)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("shutting down", "drain", 1500*time.Millisecond)
		log.With("backoff", 50*time.Millisecond).Info("grouped")
		if got := errb.String(); !strings.Contains(got, want) || strings.Contains(got, "1500000000") || strings.Contains(got, "50000000") {
			t.Errorf("%s: %q, want %s", format, got, want)
		}
	}
}

// jsonLines parses every line of a log as JSON and fails on the first that
// is not.
func jsonLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("a log line is not JSON: %q\nlog:\n%s", line, log)
		}
		out = append(out, m)
	}
	return out
}

// waitLog waits until the node's log contains s.
func (n *loggedNode) waitLog(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(n.log(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("the log did not say %q within %v:\n%s", s, d, n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLogRedisOutageJSON: with --log-format json every line a node writes
// while its Redis is down and after it is back is JSON (go-redis's own
// lines included), and the outage is one line down and one line back with
// the partitions affected, not one per partition.
func TestLogRedisOutageJSON(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{AOF: true}) // no history lost: no resets logged
	n := startLoggedNode(t, bin, "--redis", rs.URL(), "--log-format", "json", "--partitions", "4")
	n.waitReadyz(t, http.StatusOK, 30*time.Second)
	rs.Stop()
	n.waitLog(t, `"redis bus: unavailable, retrying"`, 30*time.Second)
	n.waitReadyz(t, http.StatusServiceUnavailable, 30*time.Second)
	rs.Restart()
	n.waitLog(t, `"redis bus: back"`, 30*time.Second)
	n.waitReadyz(t, http.StatusOK, 30*time.Second)

	var down, back int
	for _, l := range jsonLines(t, n.log()) {
		msg, _ := l["msg"].(string)
		switch {
		case msg == "redis bus: unavailable, retrying":
			down++
			if l["partitions"] != float64(4) || l["level"] != "WARN" {
				t.Errorf("down line: %v", l)
			}
		case msg == "redis bus: back":
			back++
			if l["partitions"] != float64(4) || l["level"] != "INFO" {
				t.Errorf("back line: %v", l)
			}
			if _, ok := l["outage"].(string); !ok {
				t.Errorf("outage %v is not a duration string", l["outage"])
			}
		case strings.HasPrefix(msg, "go-redis: ") && l["level"] != "WARN":
			t.Errorf("go-redis line not at warn: %v", l)
		}
		if _, ok := l["partition"]; ok {
			t.Errorf("a per-partition line: %v", l)
		}
	}
	if down != 1 || back != 1 {
		t.Fatalf("%d down and %d back lines, want 1 each:\n%s", down, back, n.log())
	}
}

// TestLogHookRedisDownNoGoRedisNoise: a push while Redis is down shows the
// pusher refcast's warning and none of go-redis's own lines.
func TestLogHookRedisDownNoGoRedisNoise(t *testing.T) {
	t.Parallel()
	testnode.Require(t, "git", "redis-server")
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{})
	r := newHookRepo(t, bin, rs.URL(), "acme/app")
	testnode.Git(t, r.bare, nil, "config", "refcast.timeout", "1s")
	rs.Stop()
	_, stderr := r.push(t, "while redis is down")
	if !strings.Contains(stderr, "refcast") {
		t.Fatalf("the pusher was not warned:\n%s", stderr)
	}
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "remote: redis:") || strings.Contains(line, "pool.go") || strings.Contains(line, "go-redis") {
			t.Errorf("go-redis noise reached the pusher: %q\n%s", line, stderr)
		}
	}
}

// TestLogNeverHoldsSecrets: a node with authorization on, the access log
// and debug logging, served good and bad tokens in headers, cookies and
// access_token=, logs neither a token nor the secret, and names the
// subject of the tokens that verify.
func TestLogNeverHoldsSecrets(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	secretText := strings.Repeat("s3cr3t-", 8)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	otherSecret := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(otherSecret, []byte(strings.Repeat("0th3r-", 8)), 0o600); err != nil {
		t.Fatal(err)
	}
	const publishToken = "shared-publish-tok-4711"
	n := startLoggedNode(t, bin, "--data", t.TempDir(), "--auth-secret-file", secret, "--publish-token", publishToken,
		"--access-log", "--log-level", "debug", "--log-format", "json")
	n.waitReadyz(t, http.StatusOK, 30*time.Second)
	mint := func(key string, args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"token", "--secret-file", key}, args...)...).Output()
		if err != nil {
			t.Fatalf("refcast token %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	reader := mint(secret, "--sub", "reader-bot", "--read", "acme/*:refs/heads/*", "--ttl", "1h")
	publisher := mint(secret, "--sub", "ci-publisher", "--publish", "acme/*", "--ttl", "1h")
	forged := mint(otherSecret, "--sub", "mallory", "--read", "acme/*", "--ttl", "1h")
	tokens := []string{reader, publisher, forged, publishToken, "garbage.not-a.token-9876"}

	call := func(method, path string, h http.Header, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, n.url+path, strings.NewReader(body))
		for k, v := range h {
			req.Header[k] = v
		}
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.Header.Get("Content-Type") != "text/event-stream" {
			_, _ = io.Copy(io.Discard, res.Body)
		}
		return res.StatusCode
	}
	bearer := func(tok string) http.Header {
		return http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}}
	}
	push := func(id string) string {
		b, _ := json.Marshal(map[string]any{"id": id, "repo": "acme/app", "pusher": "alice", "time": "2026-11-25T14:00:00Z",
			"updates": []any{map[string]any{"ref": "refs/heads/main", "old": strings.Repeat("1", 40), "new": strings.Repeat("a", 40)}}})
		return string(b)
	}
	for _, tc := range []struct {
		method, path string
		h            http.Header
		body         string
		want         int
	}{
		{"POST", "/v1/publish", bearer(publisher), push("p-1"), 200},
		{"POST", "/v1/publish", bearer(publishToken), push("p-2"), 200},
		{"POST", "/v1/publish", bearer(forged), push("p-3"), 401},
		{"POST", "/v1/publish", bearer(reader), push("p-4"), 403},
		{"GET", "/v1/refs?repo=acme/app&ref=refs/heads/*", bearer(reader), "", 200},
		{"GET", "/v1/refs?repo=acme/app&ref=refs/heads/*&access_token=" + reader, nil, "", 200},
		{"GET", "/v1/refs?repo=acme/app&ref=refs/heads/*", http.Header{"Cookie": {"refcast_token=" + reader}}, "", 200},
		{"GET", "/v1/refs?repo=acme/app&ref=refs/heads/*&access_token=" + forged, nil, "", 401},
		{"GET", "/v1/refs?repo=acme/app&access_token=garbage.not-a.token-9876", nil, "", 401},
		{"GET", "/v1/refs?repo=other/x&ref=refs/heads/*", bearer(reader), "", 403},
		{"GET", "/v1/history?repo=acme/app&ref=refs/heads/main&token=" + reader + "&secret=" + publishToken, bearer(reader), "", 400}, // unknown parameters
	} {
		if got := call(tc.method, tc.path, tc.h, tc.body); got != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, got, tc.want)
		}
	}
	n.waitLog(t, `"status":403`, 10*time.Second)

	log := n.log()
	for _, s := range append(tokens, secretText, strings.TrimSpace(secretText)) {
		if strings.Contains(log, s) {
			t.Errorf("the log holds a credential %.12s…:\n%s", s, log)
		}
	}
	// The signature alone would be enough to replay nothing, but a
	// token's payload segment is also not to be logged.
	for _, tok := range []string{reader, publisher, forged} {
		for _, seg := range strings.Split(tok, ".") {
			if len(seg) > 16 && strings.Contains(log, seg) {
				t.Errorf("the log holds a token segment %.12s…", seg)
			}
		}
	}
	var denied, subs int
	for _, l := range jsonLines(t, log) {
		if l["msg"] == "request denied" {
			denied++
			if _, ok := l["reason"].(string); !ok {
				t.Errorf("denied line without a reason: %v", l)
			}
		}
		if l["sub"] == "reader-bot" || l["sub"] == "ci-publisher" {
			subs++
		}
		if l["sub"] == "mallory" {
			t.Errorf("the sub of a forged token was logged: %v", l)
		}
	}
	if denied != 5 {
		t.Errorf("%d denied lines, want 5:\n%s", denied, log)
	}
	if subs == 0 {
		t.Errorf("no line names a verified token's sub:\n%s", log)
	}
}

// TestRedisLoggerCollapsesRepeats: go-redis's identical lines within a
// minute are one JSON line, and one more with how many were not written.
func TestRedisLoggerCollapsesRepeats(t *testing.T) {
	env, _, errb := wtEnv(nil)
	log, err := newLogger("info", "json", env)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r := &redisLogger{log: log, level: slog.LevelWarn, now: func() time.Time { return now }}
	ctx := context.Background()
	for range 10 {
		r.Printf(ctx, "pool.go:770: failed to dial after %d attempts\n", 5)
	}
	r.Printf(ctx, "something else")
	now = now.Add(2 * redisRepeatWindow)
	r.Printf(ctx, "something else")
	lines := jsonLines(t, errb.String())
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), errb)
	}
	if lines[0]["msg"] != "go-redis: pool.go:770: failed to dial after 5 attempts" || lines[0]["level"] != "WARN" {
		t.Errorf("first line: %v", lines[0])
	}
	if lines[1]["msg"] != lines[0]["msg"] || lines[1]["repeated"] != float64(9) {
		t.Errorf("the run's count: %v", lines[1])
	}
	if lines[2]["msg"] != "go-redis: something else" || lines[2]["repeated"] != nil || lines[3]["repeated"] != nil {
		t.Errorf("the other line: %v, %v", lines[2], lines[3])
	}
	debug := &redisLogger{log: log, level: slog.LevelDebug, now: time.Now}
	debug.Printf(ctx, "not at info")
	if n := len(jsonLines(t, errb.String())); n != 4 {
		t.Errorf("a debug line was written at info level")
	}
}

// TestLogRedisDownAtStartJSON: a node started while its Redis is down
// writes only JSON lines, and warns once that the feed is unavailable,
// not once per retry (the retries are at debug).
func TestLogRedisDownAtStartJSON(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{})
	rs.Stop()
	n := startLoggedNode(t, bin, "--redis", rs.URL(), "--log-format", "json", "--log-level", "debug")
	n.waitReadyz(t, http.StatusServiceUnavailable, 15*time.Second)
	// Retries are logged at debug: wait for one, so the warning count
	// below covers more than one attempt.
	n.waitLog(t, `"level":"DEBUG","msg":"bus feed unavailable, retrying"`, 15*time.Second)
	warned := 0
	for _, l := range jsonLines(t, n.log()) {
		if l["msg"] == "bus feed unavailable, retrying" && l["level"] == "WARN" {
			warned++
			if _, ok := l["backoff"].(string); !ok {
				t.Errorf("backoff %v is not a duration string", l["backoff"])
			}
		}
	}
	if warned != 1 {
		t.Fatalf("%d bus feed warnings, want 1:\n%s", warned, n.log())
	}
}
