package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/testnode"
	"github.com/refcast/refcast/watch"
)

// End-to-end tests of `refcast watch` against a real node started
// in-process (`refcast serve` on a free 127.0.0.1 port, embedded bus in a
// temporary directory).

const wtToken = "publish-secret"

// wtBuf is a buffer safe to read while a command writes it.
type wtBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *wtBuf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *wtBuf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func wtEnv(vars map[string]string) (Env, *wtBuf, *wtBuf) {
	out, errb := &wtBuf{}, &wtBuf{}
	return Env{Stdin: strings.NewReader(""), Stdout: out, Stderr: errb, Getenv: func(k string) string { return vars[k] }}, out, errb
}

// wtNode starts a node and returns its base URL.
func wtNode(t *testing.T, extra ...string) string {
	t.Helper()
	addr := testnode.FreeAddr(t) // never one another test of this process was given
	ctx, cancel := context.WithCancel(context.Background())
	env, _, errb := wtEnv(nil)
	args := append([]string{"serve", "--listen", addr, "--data", t.TempDir(), "--publish-token", wtToken, "--drain", "10ms"}, extra...)
	done := make(chan int)
	go func() { done <- Run(ctx, args, env) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("node did not stop")
		}
	})
	url := "http://" + addr
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// Ready, not just alive: until the engine has read the bus, reads
		// answer 503 "not connected to the bus yet" (seen under load).
		if resp, err := http.Get(url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not start: %s", errb.String())
		}
	}
}

var wtPushN int

// wtPublish publishes one push of refs to repo and returns nothing; each
// ref moves from one id to another.
func wtPublish(t *testing.T, url, repo string, refs ...string) {
	t.Helper()
	wtPushN++
	p := bus.Push{ID: fmt.Sprintf("p-%d-%d", time.Now().UnixNano(), wtPushN), Repo: repo, Pusher: "alice",
		Time: time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC), Source: "api"}
	yes := true
	for _, r := range refs {
		p.Updates = append(p.Updates, bus.RefUpdate{Ref: r, Old: strings.Repeat("1", 40), New: fmt.Sprintf("%07x", wtPushN) + strings.Repeat("a", 33),
			Forced: &yes, Commit: &bus.Commit{Subject: "fix " + r}})
	}
	body, _ := json.Marshal(p)
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+wtToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("publish: %d %s", resp.StatusCode, b)
	}
}

// wtWatch runs `refcast watch` until stop is called; stop returns the
// exit code.
type wtWatch struct {
	out, err *wtBuf
	stop     func() int
}

func startWatch(t *testing.T, vars map[string]string, args ...string) *wtWatch {
	t.Helper()
	env, out, errb := wtEnv(vars)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, append([]string{"watch", "--min-backoff", "20ms", "--max-backoff", "100ms"}, args...), env)
	}()
	var once sync.Once
	code := -1
	w := &wtWatch{out: out, err: errb}
	w.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(15 * time.Second):
				t.Error("watch did not stop")
			}
		})
		return code
	}
	t.Cleanup(func() { w.stop() })
	// Wait for the connection, so publishes after this are live.
	wtEventually(t, func() bool { return strings.Contains(errb.String(), "connected") }, "watch connected: "+errb.String())
	return w
}

// wtEventually polls cond; 60 s is a hang guard (a loaded 2-core machine
// took over 10 s for an exec run), never a measure of speed.
func wtEventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func wtRead(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func TestWatchE2EOutput(t *testing.T) {
	url := wtNode(t)
	human := startWatch(t, nil, url, "--repo", "acme/*", "--ref", "refs/heads/*")
	js := startWatch(t, map[string]string{"REFCAST_JSON": "true", "REFCAST_REPO": "acme/app"}, url)
	wtPublish(t, url, "acme/app", "refs/heads/main", "refs/tags/v1")
	wtPublish(t, url, "other/app", "refs/heads/main")

	wtEventually(t, func() bool { return strings.Count(js.out.String(), "\n") == 2 }, "two JSON lines")
	wtEventually(t, func() bool { return strings.Count(human.out.String(), "\n") == 1 }, "one human line")
	human.stop()
	js.stop()

	want := fmt.Sprintf(`2026-11-25T14:00:00Z acme/app refs/heads/main update 1111111..%07x forced by alice: "fix refs/heads/main"`+"\n", wtPushN-1)
	if got := human.out.String(); got != want {
		t.Errorf("human output\n%s\nwant\n%s", got, want)
	}
	for i, line := range strings.Split(strings.TrimSpace(js.out.String()), "\n") {
		var ev bus.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.V != 1 || ev.Repo != "acme/app" || ev.Kind != bus.KindUpdate || ev.Forced == nil || !*ev.Forced {
			t.Errorf("JSON line %d: %s (%v)", i, line, err)
		}
	}
}

func TestWatchE2EExec(t *testing.T) {
	url := wtNode(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	w := startWatch(t, map[string]string{"REFCAST_TOKEN": "t0ken"}, url, "--repo", "acme/app",
		"--exec", `{ env | grep ^REFCAST_ | sort; cat; echo; echo ---; } >> `+log)
	wtPublish(t, url, "acme/app", "refs/heads/main")
	wtEventually(t, func() bool { return strings.Contains(wtRead(log), "---") }, "the command ran")
	w.stop()
	got := wtRead(log)
	for _, want := range []string{"REFCAST_REPO=acme/app\n", "REFCAST_REF=refs/heads/main\n", "REFCAST_OLD=" + strings.Repeat("1", 40) + "\n",
		fmt.Sprintf("REFCAST_NEW=%07x%s\n", wtPushN, strings.Repeat("a", 33)), "REFCAST_KIND=update\n", "REFCAST_PUSHER=alice\n", "REFCAST_FORCED=true\n",
		"REFCAST_EVENT_COUNT=1\n", "REFCAST_CURSOR=c", `{"v":1,"repo":"acme/app","ref":"refs/heads/main"`} {
		if !strings.Contains(got, want) {
			t.Errorf("command saw no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "REFCAST_TOKEN") {
		t.Errorf("the token leaked into the command's environment:\n%s", got)
	}
}

func TestWatchE2EDebounce(t *testing.T) {
	url := wtNode(t)
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	w := startWatch(t, nil, url, "--repo", "acme/app", "--debounce", "1s",
		"--exec", `echo "$REFCAST_EVENT_COUNT $(tr -cd '{' | wc -c)" >> `+runs)
	tags := make([]string, 500)
	for i := range tags {
		tags[i] = fmt.Sprintf("refs/tags/v%d", i)
	}
	wtPublish(t, url, "acme/app", tags...)
	wtEventually(t, func() bool { return wtRead(runs) != "" }, "the command ran")
	time.Sleep(1500 * time.Millisecond) // a second window would have run by now
	w.stop()
	// 500 events in one run; stdin holds 500 objects, each with a nested commit object.
	if got := wtRead(runs); got != "500 1000\n" {
		t.Errorf("runs %q, want one run of 500 events", got)
	}
}

func TestWatchE2EStateResume(t *testing.T) {
	url := wtNode(t)
	dir := t.TempDir()
	state, runs := filepath.Join(dir, "state"), filepath.Join(dir, "runs")
	args := []string{url, "--repo", "acme/*", "--state", state, "--exec", `echo "$REFCAST_REF" >> ` + runs}

	w := startWatch(t, nil, args...)
	wtPublish(t, url, "acme/app", "refs/heads/one")
	wtEventually(t, func() bool { return wtRead(runs) == "refs/heads/one\n" }, "first run")
	if code := w.stop(); code != 0 {
		t.Fatalf("watch exited %d: %s", code, w.err.String())
	}
	first, err := watch.LoadState(state)
	if err != nil || first == "" {
		t.Fatalf("state after stop: %q, %v", first, err)
	}

	wtPublish(t, url, "acme/app", "refs/heads/two") // missed while down
	wtPublish(t, url, "acme/lib", "refs/heads/three")

	w = startWatch(t, nil, args...)
	wtEventually(t, func() bool { return strings.Count(wtRead(runs), "\n") == 3 }, "missed events run after restart")
	w.stop()
	// Different repos run concurrently, so only the set is fixed.
	got := strings.Split(strings.TrimSpace(wtRead(runs)), "\n")
	slices.Sort(got)
	if want := []string{"refs/heads/one", "refs/heads/three", "refs/heads/two"}; !slices.Equal(got, want) {
		t.Errorf("runs %q: want each event exactly once", got)
	}
	if last, _ := watch.LoadState(state); last == first {
		t.Error("state did not advance")
	}
}

// TestWatchE2EStateResumeMaxPartitions: at the most partitions a
// deployment may have, a cursor is longer than 1,024 characters (1,376
// here, with every Seq below 128); watch --state saves it and resumes from
// it all the same.
func TestWatchE2EStateResumeMaxPartitions(t *testing.T) {
	url := wtNode(t, "--partitions", strconv.Itoa(bus.MaxPartitions))
	dir := t.TempDir()
	state, runs := filepath.Join(dir, "state"), filepath.Join(dir, "runs")
	args := []string{url, "--repo", "acme/*", "--state", state, "--exec", `echo "$REFCAST_REF" >> ` + runs}

	w := startWatch(t, nil, args...)
	wtPublish(t, url, "acme/app", "refs/heads/one")
	wtEventually(t, func() bool { return wtRead(runs) == "refs/heads/one\n" }, "first run")
	if code := w.stop(); code != 0 {
		t.Fatalf("watch exited %d: %s", code, w.err.String())
	}
	first, err := watch.LoadState(state)
	if err != nil || len(first) <= 1024 {
		t.Fatalf("state after stop: %d characters, %v; want a cursor over 1,024 characters: %s", len(first), err, w.err.String())
	}

	wtPublish(t, url, "acme/lib", "refs/heads/two") // missed while down
	w = startWatch(t, nil, args...)
	wtEventually(t, func() bool { return strings.Count(wtRead(runs), "\n") == 2 }, "the missed event run after restart")
	w.stop()
	if got := wtRead(runs); got != "refs/heads/one\nrefs/heads/two\n" {
		t.Errorf("runs %q: want each event exactly once", got)
	}
	if last, err := watch.LoadState(state); err != nil || last == first {
		t.Errorf("state did not advance: %v", err)
	}
	if strings.Contains(w.err.String(), "cannot save state") {
		t.Errorf("watch could not save its state: %s", w.err.String())
	}
}

func TestWatchE2EReset(t *testing.T) {
	url := wtNode(t, "--history", "3", "--partitions", "1")
	dir := t.TempDir()
	state, runs := filepath.Join(dir, "state"), filepath.Join(dir, "runs")
	args := []string{url, "--repo", "acme/app", "--state", state,
		"--exec", `echo "$REFCAST_KIND $REFCAST_REPO $REFCAST_CURSOR $(grep -c '"reason":.*"repos":\[{"repo":"acme/app"')" >> ` + runs}

	w := startWatch(t, nil, args...)
	wtPublish(t, url, "acme/app", "refs/heads/main")
	wtEventually(t, func() bool { return strings.Count(wtRead(runs), "\n") == 1 }, "first run")
	w.stop()

	for i := range 10 { // more than the history holds
		wtPublish(t, url, "acme/app", fmt.Sprintf("refs/heads/b%d", i))
	}
	w = startWatch(t, nil, args...)
	wtEventually(t, func() bool { return strings.Count(wtRead(runs), "\n") == 2 }, "the reset run: "+wtRead(runs))
	time.Sleep(200 * time.Millisecond)
	w.stop()
	lines := strings.Split(strings.TrimSpace(wtRead(runs)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "reset acme/app c") || !strings.HasSuffix(lines[1], " 1") {
		t.Fatalf("runs:\n%s\nwant one update, then one reset with the snapshot on stdin", wtRead(runs))
	}
	cursor := strings.Fields(lines[1])[2]
	if got, _ := watch.LoadState(state); got != cursor {
		t.Errorf("state %q, want the reset's cursor %q", got, cursor)
	}
	if !strings.Contains(w.out.String(), "reset: ") {
		t.Errorf("output %q lacks the reset line", w.out.String())
	}
}

func TestWatchE2ENoOverlapPerRepo(t *testing.T) {
	url := wtNode(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	// A lock directory per repo: mkdir fails if a run of the same repo is
	// still going. Runs of different repos may overlap (--parallel 2).
	cmd := `l="` + dir + `/$(echo $REFCAST_REPO | tr / _).lock"; if mkdir "$l"; then sleep 0.1; rmdir "$l"; echo ok >> ` + log + `; else echo OVERLAP >> ` + log + `; fi`
	w := startWatch(t, nil, url, "--repo", "acme/*", "--parallel", "2", "--exec", cmd)
	for i := range 4 {
		wtPublish(t, url, "acme/a", fmt.Sprintf("refs/heads/x%d", i))
		wtPublish(t, url, "acme/b", fmt.Sprintf("refs/heads/x%d", i))
	}
	wtEventually(t, func() bool { return strings.Count(wtRead(log), "\n") == 8 }, "8 runs")
	w.stop()
	if strings.Contains(wtRead(log), "OVERLAP") {
		t.Errorf("runs of one repo overlapped:\n%s", wtRead(log))
	}
}

func TestWatchTokenAndFailure(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":"token does not grant acme/app","status":403}`)
	}))
	defer srv.Close()
	tokFile := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tokFile, []byte("from-file\n"), 0o600)
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"env", map[string]string{"REFCAST_TOKEN": "from-env"}, nil, "Bearer from-env"},
		{"file", map[string]string{"REFCAST_TOKEN": "from-env"}, []string{"--token-file", tokFile}, "Bearer from-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, errb := wtEnv(tt.vars)
			code := Run(context.Background(), append([]string{"watch", srv.URL, "--repo", "acme/app"}, tt.args...), env)
			if code != 1 || !strings.Contains(errb.String(), "token does not grant") {
				t.Errorf("exit %d, stderr %s", code, errb.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if got := auth[len(auth)-1]; got != tt.want {
				t.Errorf("Authorization %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWatchUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"-h"}, 0, "--debounce (REFCAST_DEBOUNCE)"},
		{"no url", []string{"--repo", "a"}, 2, "node URL is required"},
		{"no repo", []string{"http://x"}, 2, "--repo is required"},
		{"two urls", []string{"http://x", "http://y", "--repo", "a"}, 2, "unexpected argument"},
		{"bad failure mode", []string{"http://x", "--repo", "a", "--on-failure", "maybe"}, 2, "--on-failure"},
		{"debounce without exec", []string{"http://x", "--repo", "a", "--debounce", "1s"}, 2, "set --exec"},
		{"bad url", []string{"localhost:1", "--repo", "a"}, 2, "http://"},
		{"bad flag", []string{"http://x", "--nope"}, 2, "unknown flag --nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, errb := wtEnv(nil)
			if code := Run(context.Background(), append([]string{"watch"}, tt.args...), env); code != tt.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, errb.String())
			}
		})
	}
}
