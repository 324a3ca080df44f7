package relay

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	ghhook "github.com/go-playground/webhooks/v6/github"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

const secret = "0123456789abcdef-shared-secret"

func sha(n int) string { return fmt.Sprintf("%040x", n) }

// bigPush is one push to repo of 3 new branches, 1 force-push, a deletion
// and 50 tags, as updates with cursors c<first>...
func bigPush(repo string, first int) []Update {
	var ups []Update
	add := func(ref, old, new string, forced bool) {
		e := bus.Event{V: 1, Repo: repo, Ref: ref, Old: old, New: new, Kind: bus.KindOf(old, new), PushID: "push-" + repo, Time: time.Now(), Pusher: "alice"}
		if forced {
			e.Forced = &forced
		}
		if e.Kind != bus.KindDelete {
			e.Commit = &bus.Commit{Subject: "change " + ref, Author: "Alice", Time: time.Unix(1700000000, 0)}
		}
		ups = append(ups, Update{Cursor: fmt.Sprintf("c%d", first+len(ups)), Event: e})
	}
	for i := range 3 {
		add(fmt.Sprintf("refs/heads/b%d", i), bus.ZeroSHA1, sha(i+1), false)
	}
	add("refs/heads/main", sha(100), sha(101), true)
	add("refs/heads/old", sha(200), bus.ZeroSHA1, false)
	for i := range 50 {
		add(fmt.Sprintf("refs/tags/v1.%d", i), bus.ZeroSHA1, sha(300+i), false)
	}
	return ups
}

// receiver records what a test receiver accepted, per repo in order.
type receiver struct {
	mu   sync.Mutex
	got  map[string][]string // repo → refs in arrival order
	ids  map[string]int      // delivery id → times received
	fail func() bool         // answer 500 while it returns true
}

func newReceiver() *receiver { return &receiver{got: map[string][]string{}, ids: map[string]int{}} }

func (rc *receiver) record(repo, ref, id string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.got[repo] = append(rc.got[repo], ref)
	rc.ids[id]++
}

// githubHandler checks the signature and parses the body with
// go-playground/webhooks, the parser Argo CD uses.
func (rc *receiver) githubHandler(t *testing.T) http.Handler {
	hook, err := ghhook.New(ghhook.Options.Secret(secret))
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rc.fail != nil && rc.fail() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		id := r.Header.Get("X-GitHub-Delivery")
		if !strings.HasPrefix(r.Header.Get("X-Hub-Signature"), "sha1=") {
			t.Errorf("no sha1 signature")
		}
		pl, err := hook.Parse(r, ghhook.PushEvent)
		if err != nil {
			t.Errorf("parse: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p := pl.(ghhook.PushPayload)
		if p.Repository.FullName == "" || p.Repository.CloneURL != "https://git.example.com/"+p.Repository.FullName {
			t.Errorf("repository %+v", p.Repository)
		}
		if p.Ref == "refs/heads/main" && !p.Forced {
			t.Errorf("main not forced")
		}
		if p.Ref == "refs/heads/old" && (!p.Deleted || p.After != bus.ZeroSHA1) {
			t.Errorf("old not deleted: %+v", p)
		}
		if strings.HasPrefix(p.Ref, "refs/tags/") && (!p.Created || p.HeadCommit.ID != p.After) {
			t.Errorf("tag %s: created %v head %q", p.Ref, p.Created, p.HeadCommit.ID)
		}
		rc.record(p.Repository.FullName, p.Ref, id)
	})
}

// fluxHandler checks X-Signature the way Flux's generic-hmac Receiver does.
func (rc *receiver) fluxHandler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		algo, sig, _ := strings.Cut(r.Header.Get("X-Signature"), "=")
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		if want := fmt.Sprintf("%x", m.Sum(nil)); algo != "sha256" || !hmac.Equal([]byte(sig), []byte(want)) {
			t.Errorf("bad X-Signature %q", r.Header.Get("X-Signature"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var e bus.Event
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("body: %v", err)
		}
		rc.record(e.Repo, e.Ref, r.Header.Get("X-Refcast-Delivery")+e.Ref)
	})
}

func refsOf(ups []Update) []string {
	var out []string
	for _, u := range ups {
		out = append(out, u.Event.Ref)
	}
	return out
}

func waitSafe(t *testing.T, r *Relay, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for r.Safe() != want {
		select {
		case <-r.Changed():
		case <-deadline:
			t.Fatalf("safe cursor %q, want %q", r.Safe(), want)
		}
	}
}

func TestRelayBigPushGitHubAndFlux(t *testing.T) {
	gh, flux := newReceiver(), newReceiver()
	ghSrv := httptest.NewServer(gh.githubHandler(t))
	defer ghSrv.Close()
	fluxSrv := httptest.NewServer(flux.fluxHandler(t))
	defer fluxSrv.Close()
	fmtGH, _ := ParseFormat("github")
	fmtFlux, _ := ParseFormat("refcast")
	reg := prometheus.NewRegistry()
	r, err := New(Options{Registerer: reg, Targets: []*Target{
		{Name: "argocd", URL: ghSrv.URL, Format: fmtGH, Secret: []byte(secret), RepoURL: "https://git.example.com/{repo}"},
		{Name: "flux", URL: fluxSrv.URL, Format: fmtFlux, Secret: []byte(secret)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(time.Second)
	a, b := bigPush("org/a", 0), bigPush("org/b", 1000)
	ctx := context.Background()
	for i := range a { // interleave two repos
		for _, u := range []Update{a[i], b[i]} {
			if err := r.Handle(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitSafe(t, r, b[len(b)-1].Cursor)
	for _, rc := range []*receiver{gh, flux} {
		for repo, ups := range map[string][]Update{"org/a": a, "org/b": b} {
			if got, want := strings.Join(rc.got[repo], " "), strings.Join(refsOf(ups), " "); got != want {
				t.Errorf("%s: got\n%s\nwant\n%s", repo, got, want)
			}
		}
		for id, n := range rc.ids {
			if n != 1 {
				t.Errorf("delivery %s received %d times", id, n)
			}
		}
	}
	if n := testutil.ToFloat64(r.delivered.WithLabelValues("argocd", OutcomeDelivered)); n != 110 {
		t.Errorf("delivered to argocd = %v, want 110", n)
	}
}

// roundTripper calls a handler in-process, so a synctest bubble sees no
// network and fake time advances only while the relay waits.
type roundTripper struct{ h http.Handler }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	rt.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

func TestRelayRetriesUntilReceiverRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := newReceiver()
		start := time.Now()
		rc.fail = func() bool { return time.Since(start) < 20*time.Second }
		fmtGH, _ := ParseFormat("github")
		r, err := New(Options{
			HTTPClient: &http.Client{Transport: roundTripper{rc.githubHandler(t)}},
			Targets:    []*Target{{Name: "argocd", URL: "http://argocd.test/api/webhook", Format: fmtGH, Secret: []byte(secret), RepoURL: "https://git.example.com/{repo}"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ups := bigPush("org/a", 0)
		for _, u := range ups {
			if err := r.Handle(t.Context(), u); err != nil {
				t.Fatal(err)
			}
		}
		for r.Safe() != ups[len(ups)-1].Cursor {
			<-r.Changed()
		}
		if got, want := strings.Join(rc.got["org/a"], " "), strings.Join(refsOf(ups), " "); got != want {
			t.Errorf("got %s\nwant %s", got, want)
		}
		if n := testutil.ToFloat64(r.delivered.WithLabelValues("argocd", OutcomeFailed)); n == 0 {
			t.Error("no failed attempts counted")
		}
		if n := testutil.ToFloat64(r.delivered.WithLabelValues("argocd", OutcomeDelivered)); n != float64(len(ups)) {
			t.Errorf("delivered %v, want %d", n, len(ups))
		}
		r.Close(time.Second)
	})
}

func TestRelayRestartResendsOnlyInFlight(t *testing.T) {
	rc := newReceiver()
	block := make(chan struct{})
	var once sync.Once
	inFlight := make(chan string, 1)
	gh := rc.githubHandler(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-GitHub-Delivery") != "" && strings.Contains(peekRef(r), "refs/tags/v1.10") {
			stop := false
			once.Do(func() { stop = true })
			if stop {
				inFlight <- r.Header.Get("X-GitHub-Delivery")
				select { // the relay is killed mid-request
				case <-block:
				case <-r.Context().Done():
				}
				return
			}
		}
		gh.ServeHTTP(w, r)
	}))
	defer srv.Close()
	defer close(block)
	fmtGH, _ := ParseFormat("github")
	newRelay := func() *Relay {
		r, err := New(Options{Targets: []*Target{{Name: "argocd", URL: srv.URL, Format: fmtGH, Secret: []byte(secret), RepoURL: "https://git.example.com/{repo}"}}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ups := bigPush("org/a", 0)
	r := newRelay()
	for _, u := range ups {
		if err := r.Handle(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
	stuck := <-inFlight
	r.Close(0) // abandon the request in flight, as SIGKILL would
	safe, refs := r.Remembered()

	// Restart from the stored cursor: the stream replays after it.
	r2 := newRelay()
	defer r2.Close(time.Second)
	r2.Resume(safe, refs)
	from := 0
	for i, u := range ups {
		if u.Cursor == safe {
			from = i + 1
		}
	}
	for _, u := range ups[from:] {
		if err := r2.Handle(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
	waitSafe(t, r2, ups[len(ups)-1].Cursor)
	if got, want := rc.got["org/a"], refsOf(ups); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %v\nwant %v", got, want)
	}
	for id, n := range rc.ids {
		if n != 1 {
			t.Errorf("delivery %s received %d times", id, n)
		}
	}
	if rc.ids[stuck] != 1 {
		t.Errorf("the in-flight delivery %s was not redelivered with the same id", stuck)
	}
}

// peekRef reads the body's ref and puts the body back.
func peekRef(r *http.Request) string {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(strings.NewReader(string(b)))
	var p struct{ Ref string }
	_ = json.Unmarshal(b, &p)
	return p.Ref
}

func TestRelayDeadLetter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer srv.Close()
	dir := t.TempDir()
	f, _ := ParseFormat("jenkins")
	r, err := New(Options{
		MaxAttempts: 3, DeadLetter: dir,
		Sleep:   func(context.Context, time.Duration) error { return nil },
		Targets: []*Target{{Name: "jenkins", URL: srv.URL, Format: f, Secret: []byte(secret)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(time.Second)
	u := bigPush("org/a", 0)[0]
	if err := r.Handle(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	waitSafe(t, r, u.Cursor)
	b, err := os.ReadFile(filepath.Join(dir, "jenkins", DeliveryID("jenkins", u)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var dl DeadLetter
	if err := json.Unmarshal(b, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Attempts != 3 || dl.Response == nil || dl.Response.Status != 500 || strings.Contains(string(b), secret) {
		t.Errorf("dead letter %s", b)
	}
}

func TestTargetValidation(t *testing.T) {
	f, _ := ParseFormat("github")
	for name, tg := range map[string]Target{
		"short secret": {URL: "http://x", Format: f, Secret: []byte("short")},
		"ftp scheme":   {URL: "ftp://x", Format: f, Secret: []byte(secret)},
		"no host":      {URL: "http://", Format: f, Secret: []byte(secret)},
		"bad pattern":  {URL: "http://x", Format: f, Secret: []byte(secret), Repos: []string{"["}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(Options{Targets: []*Target{&tg}}); err == nil {
				t.Error("accepted")
			}
		})
	}
	if _, err := ParseFormat("bitbucket"); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestDeliveryIDStable(t *testing.T) {
	u := bigPush("org/a", 0)[3]
	first, again := DeliveryID("a", u), DeliveryID("a", u) // computed twice: derived, not random
	if first != again || first == DeliveryID("b", u) {
		t.Error("delivery id not stable per target")
	}
	v := u
	v.Event.Ref = "refs/heads/other"
	if DeliveryID("a", u) == DeliveryID("a", v) {
		t.Error("delivery id ignores the ref")
	}
}

func TestFormatJenkinsNotifyCommit(t *testing.T) {
	f, _ := ParseFormat("jenkins")
	tg := &Target{Name: "j", URL: "https://jenkins.example.com/", Format: f, Secret: []byte(secret), RepoURL: "https://git.example.com/{repo}.git"}
	if err := tg.check(); err != nil {
		t.Fatal(err)
	}
	u := bigPush("org/a", 0)[0]
	req, _, err := f.Request(context.Background(), tg, u, "id")
	if err != nil {
		t.Fatal(err)
	}
	q := req.URL.Query()
	if req.Method != http.MethodPost || req.URL.Path != "/git/notifyCommit" || q.Get("url") != "https://git.example.com/org/a.git" ||
		q.Get("branches") != "b0" || q.Get("sha1") != u.Event.New || q.Get("token") != secret {
		t.Errorf("request %s %s", req.Method, req.URL)
	}
}

func TestFormatGitLab(t *testing.T) {
	f, _ := ParseFormat("gitlab")
	tg := &Target{Name: "g", URL: "https://flux.example.com/hook", Format: f, Secret: []byte(secret), RepoURL: "https://git.example.com/{repo}"}
	if err := tg.check(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		u     Update
		event string
	}{{bigPush("org/a", 0)[0], "Push Hook"}, {bigPush("org/a", 0)[10], "Tag Push Hook"}} {
		req, body, err := f.Request(context.Background(), tg, tt.u, "id")
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			ObjectKind string `json:"object_kind"`
			Ref, After string
			Project    struct {
				PathWithNamespace string `json:"path_with_namespace"`
				WebURL            string `json:"web_url"`
			}
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		if req.Header.Get("X-Gitlab-Event") != tt.event || req.Header.Get("X-Gitlab-Token") != secret ||
			p.Ref != tt.u.Event.Ref || p.After != tt.u.Event.New || p.Project.WebURL != "https://git.example.com/org/a" {
			t.Errorf("%s: %v %s", tt.event, req.Header, body)
		}
	}
}

// FuzzFormats: every format builds a request for any event, the same
// bytes on every call (receivers deduplicate on ids and check signatures
// over the body), and header values without CR/LF.
func FuzzFormats(f *testing.F) {
	f.Add("org/a", "refs/heads/main", sha(1), sha(2), "alice", "subject")
	f.Add("a\r\nb", "refs/tags/\n", "", "", "x\r\nX-Evil: 1", "")
	f.Fuzz(func(t *testing.T, repo, ref, old, new, pusher, subject string) {
		u := Update{Cursor: "c", Event: bus.Event{Repo: repo, Ref: ref, Old: old, New: new, Kind: bus.KindOf(old, new), Pusher: pusher, PushID: "p", Commit: &bus.Commit{Subject: subject}}}
		for _, name := range Formats {
			fm, _ := ParseFormat(name)
			tg := &Target{Name: "t", URL: "http://x/hook", Format: fm, Secret: []byte(secret), RepoURL: "https://g/{repo}"}
			if err := tg.check(); err != nil {
				t.Fatal(err)
			}
			id := DeliveryID(tg.Name, u)
			r1, b1, err1 := fm.Request(context.Background(), tg, u, id)
			r2, b2, err2 := fm.Request(context.Background(), tg, u, id)
			if (err1 == nil) != (err2 == nil) {
				t.Fatalf("%s: errors differ", name)
			}
			if err1 != nil {
				continue
			}
			if string(b1) != string(b2) || r1.URL.String() != r2.URL.String() {
				t.Fatalf("%s: not deterministic", name)
			}
			for k, vs := range r1.Header {
				for _, v := range vs {
					if strings.ContainsAny(v, "\r\n") {
						t.Fatalf("%s: header %s has CR/LF", name, k)
					}
				}
			}
		}
	})
}

func TestRelayResetDeliversChangedRefs(t *testing.T) {
	rc := newReceiver()
	srv := httptest.NewServer(rc.fluxHandler(t))
	defer srv.Close()
	f, _ := ParseFormat("refcast")
	r, err := New(Options{Targets: []*Target{{Name: "flux", URL: srv.URL, Format: f, Secret: []byte(secret)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(time.Second)
	ups := bigPush("org/a", 0)[:4] // b0 b1 b2 main
	for _, u := range ups {
		if err := r.Handle(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
	waitSafe(t, r, ups[3].Cursor)
	// The node lost its history: b0 unchanged, b1 moved, b2 gone, new added.
	rs := wire.Reset{Cursor: "snap", Repos: []wire.RepoRefs{{Repo: "org/a", Refs: map[string]string{
		"refs/heads/b0": sha(1), "refs/heads/b1": sha(77), "refs/heads/main": sha(101), "refs/heads/new": sha(88),
	}}}}
	if err := r.HandleReset(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	waitSafe(t, r, "snap")
	if got := strings.Join(rc.got["org/a"][4:], " "); got != "refs/heads/b1 refs/heads/b2 refs/heads/new" {
		t.Errorf("reset delivered %s", got)
	}
}

func TestRelayHandleAfterClose(t *testing.T) {
	f, _ := ParseFormat("refcast")
	r, err := New(Options{Targets: []*Target{{URL: "http://127.0.0.1:1/", Format: f, Secret: []byte(secret)}}})
	if err != nil {
		t.Fatal(err)
	}
	r.Close(0)
	if err := r.Handle(context.Background(), bigPush("org/a", 0)[0]); err != ErrClosed {
		t.Errorf("Handle after Close: %v", err)
	}
}

// TestRelayNoSecretInLogs: a jenkins target (its token in the query) that
// cannot be reached is logged and dead-lettered without the token.
func TestRelayNoSecretInLogs(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	dir := t.TempDir()
	f, _ := ParseFormat("jenkins")
	r, err := New(Options{
		MaxAttempts: 2, DeadLetter: dir, Sleep: func(context.Context, time.Duration) error { return nil },
		Logger:  slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)),
		Targets: []*Target{{Name: "jenkins", URL: "http://127.0.0.1:1/", Format: f, Secret: []byte(secret)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(time.Second)
	u := bigPush("org/a", 0)[0]
	if err := r.Handle(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	waitSafe(t, r, u.Cursor)
	b, _ := os.ReadFile(filepath.Join(dir, "jenkins", DeliveryID("jenkins", u)+".json"))
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "retrying") || len(b) == 0 {
		t.Fatalf("no failure logged or dead letter written:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(string(b), secret) {
		t.Errorf("the secret leaked:\n%s\n%s", logs.String(), b)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
