package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	ghhook "github.com/go-playground/webhooks/v6/github"
	"github.com/refcast/refcast/internal/testnode"
)

// TestRelayE2ESIGKILLRestart: the relay process is killed with SIGKILL
// while a delivery is in flight, then restarted on the same --state: every
// update arrives, in order, and the only repeats are of deliveries in
// flight (or acknowledged but not yet saved), with the same delivery id.
func TestRelayE2ESIGKILLRestart(t *testing.T) {
	bin := testnode.Build(t)
	url := wtNode(t)
	hook, _ := ghhook.New(ghhook.Options.Secret(relaySecretText))
	var mu sync.Mutex
	var got []string // ref per delivery, in arrival order
	idRef := map[string]string{}
	inFlight, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pl, err := hook.Parse(r, ghhook.PushEvent)
		if err != nil {
			t.Errorf("parse: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		p := pl.(ghhook.PushPayload)
		id := r.Header.Get("X-GitHub-Delivery")
		mu.Lock()
		got = append(got, p.Ref)
		if prev, ok := idRef[id]; ok && prev != p.Ref {
			t.Errorf("delivery id %s reused for %s and %s", id, prev, p.Ref)
		}
		idRef[id] = p.Ref
		mu.Unlock()
		if p.Ref == "refs/heads/b5" {
			stuck := false
			once.Do(func() { stuck = true })
			if stuck { // never answered: the relay dies waiting
				close(inFlight)
				select {
				case <-release:
				case <-r.Context().Done():
				}
				return
			}
		}
	}))
	defer srv.Close()
	defer close(release)

	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte(relaySecretText), 0o600)
	start := func() (*exec.Cmd, *wtBuf) {
		cmd := exec.Command(bin, "relay", url, "--repo", "acme/app", "--state", filepath.Join(dir, "state"),
			"--to", srv.URL, "--format", "github", "--secret-file", secret, "--repo-url", "https://git.example.com/{repo}")
		errb := &wtBuf{}
		cmd.Stderr = errb
		cmd.Env = append(os.Environ(), "REFCAST_TOKEN=")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		wtEventually(t, func() bool { return strings.Contains(errb.String(), "connected") }, "relay connected: "+errb.String())
		return cmd, errb
	}

	cmd, _ := start()
	var refs []string
	for i := range 10 {
		refs = append(refs, fmt.Sprintf("refs/heads/b%d", i))
	}
	wtPublish(t, url, "acme/app", refs...)
	<-inFlight
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no drain, no final save
		t.Fatal(err)
	}
	cmd.Wait()

	start()
	seen := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		n := map[string]int{}
		for _, r := range got {
			n[r]++
		}
		return n
	}
	wtEventually(t, func() bool { return len(seen()) == 10 }, "every update delivered")
	n := seen()
	mu.Lock()
	defer mu.Unlock()
	var first []string
	firstSeen := map[string]bool{}
	for _, r := range got {
		if !firstSeen[r] {
			firstSeen[r] = true
			first = append(first, r)
		}
	}
	if strings.Join(first, " ") != strings.Join(refs, " ") {
		t.Errorf("order %v", got)
	}
	if n["refs/heads/b5"] != 2 {
		t.Errorf("the in-flight b5 arrived %d times, want 2 (once before the kill, once after)", n["refs/heads/b5"])
	}
	for _, r := range refs[6:] {
		if n[r] != 1 {
			t.Errorf("%s arrived %d times", r, n[r])
		}
	}
	// Before b5, only an update acknowledged in the instant before the
	// kill (state not yet saved) may repeat, and only right before b5.
	for _, r := range refs[:4] {
		if n[r] > 1 && n[refs[4]] == 1 {
			t.Errorf("%s repeated though a later update was not: %v", r, got)
		}
	}
}
