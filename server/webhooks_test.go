package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/forge"
)

const hookSecret = "webhook-secret-0123456789"

func hookPayload(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../forge/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hookMAC(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// hookHeaders are what forge f sends with body, signed with secret.
func hookHeaders(f forge.Forge, event, delivery, secret string, body []byte) map[string]string {
	h := map[string]string{"Content-Type": "application/json"}
	switch f {
	case forge.GitHub:
		h["X-GitHub-Event"], h["X-GitHub-Delivery"] = event, delivery
		h["X-Hub-Signature-256"] = "sha256=" + hookMAC(secret, body)
	case forge.GitLab:
		h["X-Gitlab-Event"], h["X-Gitlab-Event-UUID"], h["X-Gitlab-Token"] = event, delivery, secret
	case forge.Gitea:
		h["X-Gitea-Event"], h["X-Gitea-Delivery"] = event, delivery
		h["X-Gitea-Signature"] = hookMAC(secret, body)
	case forge.Bitbucket:
		h["X-Event-Key"], h["X-Request-UUID"] = event, delivery
		h["X-Hub-Signature"] = "sha256=" + hookMAC(secret, body)
	}
	return h
}

func (n *testNode) hook(t testing.TB, f forge.Forge, hdr map[string]string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, n.url+"/v1/hooks/"+string(f), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	st, _, b := do(t, req)
	return st, b
}

func startHookNode(t testing.TB, b bus.Bus, mod func(*forge.Receiver)) *testNode {
	t.Helper()
	secrets, err := forge.ParseSecrets(strings.NewReader(hookSecret))
	if err != nil {
		t.Fatal(err)
	}
	r := &forge.Receiver{Secrets: secrets}
	if mod != nil {
		mod(r)
	}
	return startNode(t, b, time.Second, func(o *Options) { o.Webhooks = r })
}

// eventLine is what a test compares of an event: all but the time.
func eventLine(e bus.Event) string {
	s := fmt.Sprintf("%s %s %s..%s %s push=%s src=%s by=%s", e.Repo, e.Ref, e.Old[:7], e.New[:7], e.Kind, e.PushID, e.Source, e.Pusher)
	if e.Forced != nil {
		s += fmt.Sprintf(" forced=%v", *e.Forced)
	}
	if e.Commits != nil {
		s += fmt.Sprintf(" commits=%d", *e.Commits)
	}
	if e.Commit != nil {
		s += fmt.Sprintf(" subject=%q author=%q at=%s", e.Commit.Subject, e.Commit.Author, e.Commit.Time.UTC().Format(time.RFC3339))
	}
	if e.Peeled != "" {
		s += " peeled=" + e.Peeled[:7]
	}
	return s
}

func TestWebhookForgesPublish(t *testing.T) {
	n := startHookNode(t, newBus(t, memory.Options{}), func(r *forge.Receiver) { r.RepoPrefix = "forge.example/" })
	s := n.subscribe(t, query("repo", "forge.example/**"), nil)
	s.opening()
	deliveries := []struct {
		forge forge.Forge
		event string
		file  string
		want  []string
	}{
		{forge.GitHub, "push", "github-push.json", []string{`forge.example/Codertocat/Hello-World refs/heads/main 6113728..0d1a26e update push=github:d1 src=github by=Codertocat forced=false commits=2 subject="Update README.md" author="Codertocat" at=2019-05-15T19:20:30Z`}},
		{forge.GitHub, "push", "github-tag.json", []string{`forge.example/Codertocat/Hello-World refs/tags/v1.0.0 0000000..9a7f5e0 create push=github:d2 src=github by=Codertocat commits=0 subject="Update README.md" author="Codertocat" at=2019-05-15T19:20:30Z peeled=0d1a26e`}},
		{forge.GitHub, "push", "github-forced.json", []string{`forge.example/Codertocat/Hello-World refs/heads/main 0d1a26e..6113728 update push=github:d3 src=github by=Codertocat forced=true commits=0 subject="Initial commit" author="Codertocat" at=2019-05-15T15:18:00Z`}},
		{forge.GitHub, "push", "github-delete.json", []string{`forge.example/Codertocat/Hello-World refs/heads/feature/old 0d1a26e..0000000 delete push=github:d4 src=github by=Codertocat`}},
		{forge.GitLab, "Push Hook", "gitlab-push.json", []string{`forge.example/mike/diaspora refs/heads/master 95790bf..da15608 update push=gitlab:d5 src=gitlab by=jsmith commits=4 subject="fixed readme" author="GitLab dev user" at=2012-01-03T21:36:29Z`}},
		{forge.GitLab, "Tag Push Hook", "gitlab-tag.json", []string{`forge.example/jsmith/example refs/tags/v1.0.0 0000000..82b3d5a create push=gitlab:d6 src=gitlab by=jsmith commits=0`}},
		{forge.Gitea, "push", "gitea-push.json", []string{`forge.example/gitea/webhooks refs/heads/develop 28e1879..bffeb74 update push=gitea:d7 src=gitea by=gitea commits=1 subject="Webhooks Yay!" author="Gitea" at=2017-03-13T17:52:11Z`}},
		{forge.Bitbucket, "repo:push", "bitbucket-cloud-push.json", []string{
			`forge.example/acme-team/widgets refs/heads/main 1e65c05..709d658 update push=bitbucket:d8 src=bitbucket by=emma forced=true commits=1 subject="Rewrite history" author="Emma Smith" at=2023-05-10T14:01:27Z`,
			`forge.example/acme-team/widgets refs/tags/v2.1 0000000..709d658 create push=bitbucket:d8 src=bitbucket by=emma commits=0 subject="Rewrite history" author="Emma Smith <emma@example.com>" at=2023-05-10T14:01:27Z`,
			`forge.example/acme-team/widgets refs/heads/feature/x 1e65c05..0000000 delete push=bitbucket:d8 src=bitbucket by=emma`,
		}},
		{forge.Bitbucket, "repo:refs_changed", "bitbucket-dc-refs-changed.json", []string{
			`forge.example/PROJ/repository refs/heads/master ecddabb..178864a update push=bitbucket:d9 src=bitbucket by=admin`,
			`forge.example/PROJ/repository refs/tags/release-1 0000000..178864a create push=bitbucket:d9 src=bitbucket by=admin`,
		}},
	}
	for i, d := range deliveries {
		body := hookPayload(t, d.file)
		st, resp := n.hook(t, d.forge, hookHeaders(d.forge, d.event, fmt.Sprintf("d%d", i+1), hookSecret, body), body)
		if st != http.StatusOK {
			t.Fatalf("%s: %d %s", d.file, st, resp)
		}
		evs, _ := s.events(len(d.want), patience)
		for j, e := range evs {
			if got := eventLine(e); got != d.want[j] {
				t.Errorf("%s event %d:\n got %s\nwant %s", d.file, j, got, d.want[j])
			}
		}
	}
}

func TestWebhookRefused(t *testing.T) {
	n := startHookNode(t, newBus(t, memory.Options{}), func(r *forge.Receiver) { r.MaxBody = 64 << 10 })
	s := n.subscribe(t, query("repo", "Codertocat/Hello-World"), nil)
	s.opening()
	body := hookPayload(t, "github-push.json")
	good := func(delivery string) map[string]string {
		return hookHeaders(forge.GitHub, "push", delivery, hookSecret, body)
	}
	with := func(h map[string]string, k, v string) map[string]string { h[k] = v; return h }
	form := []byte("payload=" + string(body))
	big := append(bytes.Repeat([]byte(" "), 64<<10), body...)
	bad := bytes.Replace(body, []byte(`"Codertocat/Hello-World"`), []byte(`"Codertocat/Hello World"`), 1)
	cases := []struct {
		name string
		hdr  map[string]string
		body []byte
		want int
		msg  string
	}{
		{"wrong signature", with(good("r1"), "X-Hub-Signature-256", "sha256="+hookMAC("another-secret-0123456789", body)), body, 401, "does not match"},
		{"altered after signing", good("r2"), bytes.Replace(body, []byte("Update README"), []byte("Update READYOU"), 1), 401, "does not match"},
		{"missing signature", with(good("r3"), "X-Hub-Signature-256", ""), body, 401, "missing X-Hub-Signature-256"},
		{"missing event", with(good("r4"), "X-GitHub-Event", ""), body, 400, "X-GitHub-Event"},
		{"missing delivery", with(good(""), "X-GitHub-Delivery", ""), body, 400, "X-GitHub-Delivery"},
		{"form encoded", with(hookHeaders(forge.GitHub, "push", "r5", hookSecret, form), "Content-Type", "application/x-www-form-urlencoded"), form, 415, "application/json"},
		{"not json", hookHeaders(forge.GitHub, "push", "r6", hookSecret, []byte("<xml/>")), []byte("<xml/>"), 400, "not a JSON object"},
		{"oversized", hookHeaders(forge.GitHub, "push", "r7", hookSecret, big), big, 413, "larger than"},
		{"bad repo name", hookHeaders(forge.GitHub, "push", "r8", hookSecret, bad), bad, 422, "repository.full_name"},
		{"gitlab wrong token", hookHeaders(forge.GitLab, "Push Hook", "r9", "another-secret-0123456789", body), body, 401, "X-Gitlab-Token"},
	}
	for _, c := range cases {
		st, resp := n.hook(t, forge.GitHub, c.hdr, c.body)
		if c.name == "gitlab wrong token" {
			st, resp = n.hook(t, forge.GitLab, c.hdr, c.body)
		}
		if st != c.want || !strings.Contains(apiErrorBody(t, st, resp), c.msg) {
			t.Errorf("%s: got %d %s, want %d containing %q", c.name, st, resp, c.want, c.msg)
		}
	}
	// Ping and other events are acknowledged and publish nothing.
	ping := []byte(`{"zen":"Design for failure.","hook_id":1}`)
	if st, resp := n.hook(t, forge.GitHub, hookHeaders(forge.GitHub, "ping", "p1", hookSecret, ping), ping); st != http.StatusOK {
		t.Errorf("ping: %d %s", st, resp)
	}
	if st, resp := n.hook(t, forge.GitHub, hookHeaders(forge.GitHub, "issues", "p2", hookSecret, ping), ping); st != http.StatusAccepted {
		t.Errorf("issues: %d %s", st, resp)
	}
	// A delivery and its redelivery (same id, on a reused body) publish once.
	for range 2 {
		if st, resp := n.hook(t, forge.GitHub, good("once"), body); st != http.StatusOK {
			t.Fatalf("delivery: %d %s", st, resp)
		}
	}
	forced := hookPayload(t, "github-forced.json")
	if st, resp := n.hook(t, forge.GitHub, hookHeaders(forge.GitHub, "push", "sentinel", hookSecret, forced), forced); st != http.StatusOK {
		t.Fatalf("sentinel: %d %s", st, resp)
	}
	evs, _ := s.events(2, patience)
	if evs[0].PushID != "github:once" || evs[1].PushID != "github:sentinel" {
		t.Fatalf("events %v: want github:once then github:sentinel and nothing else", []string{evs[0].PushID, evs[1].PushID})
	}
}

func TestWebhookDisabled(t *testing.T) {
	n := startNode(t, newBus(t, memory.Options{}), time.Second, nil)
	body := hookPayload(t, "github-push.json")
	for _, f := range forge.Forges {
		st, resp := n.hook(t, f, hookHeaders(f, "push", "x", hookSecret, body), body)
		if st != http.StatusNotFound {
			t.Errorf("%s: %d %s, want 404", f, st, resp)
		}
	}
}

// downBus refuses every publish, as a bus whose backend is unreachable.
type downBus struct{ bus.Bus }

func (downBus) Publish(context.Context, *bus.Push) ([]bus.Event, error) {
	return nil, fmt.Errorf("redis: %w", bus.ErrUnavailable)
}

func TestWebhookBusDown(t *testing.T) {
	n := startHookNode(t, downBus{newBus(t, memory.Options{})}, nil)
	body := hookPayload(t, "github-push.json")
	st, resp := n.hook(t, forge.GitHub, hookHeaders(forge.GitHub, "push", "down", hookSecret, body), body)
	if st != http.StatusServiceUnavailable {
		t.Fatalf("%d %s, want 503 so the forge redelivers", st, resp)
	}
}
