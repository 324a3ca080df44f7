package forge

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

const testSecret = "0123456789abcdef-secret"

var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func load(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mac(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// signed returns the headers forge f sends with body: event, delivery id
// and signature (or token) made with secret.
func signed(f Forge, event, delivery, secret string, body []byte) http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	switch f {
	case GitHub:
		h.Set("X-GitHub-Event", event)
		h.Set("X-GitHub-Delivery", delivery)
		h.Set("X-Hub-Signature-256", "sha256="+mac(secret, body))
	case GitLab:
		h.Set("X-Gitlab-Event", event)
		h.Set("X-Gitlab-Event-UUID", delivery)
		h.Set("X-Gitlab-Token", secret)
	case Gitea:
		h.Set("X-Gitea-Event", event)
		h.Set("X-Gitea-Delivery", delivery)
		h.Set("X-Gitea-Signature", mac(secret, body))
	case Bitbucket:
		h.Set("X-Event-Key", event)
		h.Set("X-Request-UUID", delivery)
		h.Set("X-Hub-Signature", "sha256="+mac(secret, body))
	}
	return h
}

func receiver(t testing.TB, file string) *Receiver {
	t.Helper()
	s, err := ParseSecrets(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	return &Receiver{Secrets: s, Now: func() time.Time { return testNow }}
}

func ptr[T any](v T) *T { return &v }

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestTranslate(t *testing.T) {
	const d = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	z := bus.ZeroSHA1
	cases := []struct {
		name   string
		forge  Forge
		event  string
		file   string
		repo   string
		pusher string
		want   []bus.RefUpdate
	}{
		{"github branch", GitHub, "push", "github-push.json", "Codertocat/Hello-World", "Codertocat", []bus.RefUpdate{{
			Ref: "refs/heads/main", Old: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", New: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
			Forced: ptr(false), Commits: ptr(2), Enriched: bus.EnrichPartial,
			Commit: &bus.Commit{Subject: "Update README.md", Author: "Codertocat", Time: ts("2019-05-15T15:20:30-04:00")},
		}}},
		{"github annotated tag", GitHub, "push", "github-tag.json", "Codertocat/Hello-World", "Codertocat", []bus.RefUpdate{{
			Ref: "refs/tags/v1.0.0", Old: z, New: "9a7f5e0c2b1d4e3f60718293a4b5c6d7e8f90a1b",
			Commits: ptr(0), Enriched: bus.EnrichPartial, Peeled: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
			Commit: &bus.Commit{Subject: "Update README.md", Author: "Codertocat", Time: ts("2019-05-15T15:20:30-04:00")},
		}}},
		{"github delete", GitHub, "push", "github-delete.json", "Codertocat/Hello-World", "Codertocat", []bus.RefUpdate{{
			Ref: "refs/heads/feature/old", Old: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", New: z,
		}}},
		{"github forced", GitHub, "push", "github-forced.json", "Codertocat/Hello-World", "Codertocat", []bus.RefUpdate{{
			Ref: "refs/heads/main", Old: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", New: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
			Forced: ptr(true), Commits: ptr(0), Enriched: bus.EnrichPartial,
			Commit: &bus.Commit{Subject: "Initial commit", Author: "Codertocat", Time: ts("2019-05-15T15:18:00Z")},
		}}},
		{"gitlab push", GitLab, "Push Hook", "gitlab-push.json", "mike/diaspora", "jsmith", []bus.RefUpdate{{
			Ref: "refs/heads/master", Old: "95790bf891e76fee5e1747ab589903a6a1f80f22", New: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
			Commits: ptr(4), Enriched: bus.EnrichPartial,
			Commit: &bus.Commit{Subject: "fixed readme", Author: "GitLab dev user", Time: ts("2012-01-03T23:36:29+02:00")},
		}}},
		{"gitlab tag", GitLab, "Tag Push Hook", "gitlab-tag.json", "jsmith/example", "jsmith", []bus.RefUpdate{{
			Ref: "refs/tags/v1.0.0", Old: z, New: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
			Commits: ptr(0), Enriched: bus.EnrichPartial,
		}}},
		{"gitea push", Gitea, "push", "gitea-push.json", "gitea/webhooks", "gitea", []bus.RefUpdate{{
			Ref: "refs/heads/develop", Old: "28e1879d029cb852e4844d9c718537df08844e03", New: "bffeb74224043ba2feb48d137756c8a9331c449a",
			Commits: ptr(1), Enriched: bus.EnrichPartial,
			Commit: &bus.Commit{Subject: "Webhooks Yay!", Author: "Gitea", Time: ts("2017-03-13T13:52:11-04:00")},
		}}},
		{"bitbucket cloud", Bitbucket, "repo:push", "bitbucket-cloud-push.json", "acme-team/widgets", "emma", []bus.RefUpdate{
			{Ref: "refs/heads/main", Old: "1e65c05c1d5171631d92438a13901ca7dae9618c", New: "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
				Forced: ptr(true), Commits: ptr(1), Enriched: bus.EnrichPartial,
				Commit: &bus.Commit{Subject: "Rewrite history", Author: "Emma Smith", Time: ts("2023-05-10T14:01:27+00:00")}},
			{Ref: "refs/tags/v2.1", Old: z, New: "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
				Commits: ptr(0), Enriched: bus.EnrichPartial,
				Commit: &bus.Commit{Subject: "Rewrite history", Author: "Emma Smith <emma@example.com>", Time: ts("2023-05-10T14:01:27+00:00")}},
			{Ref: "refs/heads/feature/x", Old: "1e65c05c1d5171631d92438a13901ca7dae9618c", New: z},
		}},
		{"bitbucket data center", Bitbucket, "repo:refs_changed", "bitbucket-dc-refs-changed.json", "PROJ/repository", "admin", []bus.RefUpdate{
			{Ref: "refs/heads/master", Old: "ecddabb624f6f5ba43816f5926e580a5f680a932", New: "178864a7d521b6f5e720b386b2c2b0ef8563e0dc"},
			{Ref: "refs/tags/release-1", Old: z, New: "178864a7d521b6f5e720b386b2c2b0ef8563e0dc"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := load(t, c.file)
			r := receiver(t, testSecret)
			got, err := r.Receive(c.forge, signed(c.forge, c.event, d, testSecret, body), bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			want := &bus.Push{ID: string(c.forge) + ":" + d, Repo: c.repo, Pusher: c.pusher, Time: testNow,
				Source: string(c.forge), Updates: c.want}
			if g, w := jsonOf(t, got.Push), jsonOf(t, want); g != w {
				t.Errorf("push\n got %s\nwant %s", g, w)
			}
		})
	}
}

func jsonOf(t testing.TB, p *bus.Push) string {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestGitHubManyCommits(t *testing.T) {
	var commits []string
	for i := range githubMaxCommits {
		commits = append(commits, fmt.Sprintf(`{"id":"%040x","message":"c%d","timestamp":"2020-01-01T00:00:00Z","author":{"name":"a"}}`, i+1, i))
	}
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/big","before":"%040x","after":"%040x","commits":[%s],
		"head_commit":{"id":"%040x","message":"last\n\nbody","timestamp":"2020-01-01T00:00:00Z","author":{"name":"a"}},
		"repository":{"full_name":"o/r"},"pusher":{"name":"p"}}`, 99999, githubMaxCommits, strings.Join(commits, ","), githubMaxCommits))
	r := receiver(t, testSecret)
	d, err := r.Receive(GitHub, signed(GitHub, "push", "many", testSecret, body), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	u := d.Push.Updates[0]
	if *u.Commits != githubMaxCommits || !u.CommitsMore || u.Commit.Subject != "last" {
		t.Errorf("update %+v: want %d+ commits, subject last", u, githubMaxCommits)
	}
}

func TestReceiveRefused(t *testing.T) {
	body := load(t, "github-push.json")
	other := "another-secret-0123456789"
	cases := []struct {
		name   string
		forge  Forge
		mod    func(h http.Header) []byte // returns the body to send
		file   string
		target error
		msg    string
	}{
		{"wrong secret", GitHub, func(h http.Header) []byte { h.Set("X-Hub-Signature-256", "sha256="+mac(other, body)); return body }, testSecret, ErrUnauthorized, "does not match"},
		{"altered body", GitHub, func(h http.Header) []byte { return bytes.Replace(body, []byte("main"), []byte("mainx"), 1) }, testSecret, ErrUnauthorized, "does not match"},
		{"missing signature", GitHub, func(h http.Header) []byte { h.Del("X-Hub-Signature-256"); return body }, testSecret, ErrUnauthorized, "missing X-Hub-Signature-256"},
		{"sha1 signature", GitHub, func(h http.Header) []byte { h.Set("X-Hub-Signature-256", "sha1=abcd"); return body }, testSecret, ErrUnauthorized, "64 hex digits"},
		{"missing token", GitLab, func(h http.Header) []byte { h.Del("X-Gitlab-Token"); return body }, testSecret, ErrUnauthorized, "X-Gitlab-Token"},
		{"wrong token", GitLab, func(h http.Header) []byte { h.Set("X-Gitlab-Token", other); return body }, testSecret, ErrUnauthorized, "does not match"},
		{"other org's secret", GitHub, func(h http.Header) []byte { return body }, "other/* " + testSecret + "\nCodertocat/* " + other, ErrUnauthorized, "not configured for repo"},
		{"form encoded", GitHub, func(h http.Header) []byte { h.Set("Content-Type", "application/x-www-form-urlencoded"); return body }, testSecret, ErrContentType, "application/json"},
		{"not json", GitHub, func(h http.Header) []byte { return []byte("payload=%7B%7D") }, testSecret, ErrMalformed, "not a JSON object"},
		{"missing delivery", GitHub, func(h http.Header) []byte { h.Del("X-GitHub-Delivery"); return body }, testSecret, ErrMalformed, "X-GitHub-Delivery"},
		{"bad delivery", GitHub, func(h http.Header) []byte { h.Set("X-GitHub-Delivery", "a b"); return body }, testSecret, ErrMalformed, "X-GitHub-Delivery"},
		{"missing event", GitHub, func(h http.Header) []byte { h.Del("X-GitHub-Event"); return body }, testSecret, ErrMalformed, "X-GitHub-Event"},
		{"bad repo", GitHub, func(h http.Header) []byte {
			return bytes.Replace(body, []byte(`"Codertocat/Hello-World"`), []byte(`"Codertocat/.github"`), 1)
		}, testSecret, ErrUnacceptable, "repository.full_name"},
		{"bad ref", GitHub, func(h http.Header) []byte {
			return bytes.Replace(body, []byte(`"refs/heads/main"`), []byte(`"main"`), 1)
		}, testSecret, ErrUnacceptable, "ref"},
		{"bad id", GitHub, func(h http.Header) []byte {
			return bytes.Replace(body, []byte(`"6113728f27ae82c7b1a177c8d03f9e96e0adf246"`), []byte(`"6113728F"`), 1)
		}, testSecret, ErrUnacceptable, "before"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := receiver(t, c.file)
			h := signed(c.forge, "push", "d-1", testSecret, body)
			if c.forge == GitLab {
				h = signed(GitLab, "Push Hook", "d-1", testSecret, body)
			}
			b := c.mod(h)
			if c.name == "not json" || c.name == "bad repo" || c.name == "bad ref" || c.name == "bad id" {
				h.Set("X-Hub-Signature-256", "sha256="+mac(testSecret, b)) // signed as sent
			}
			d, err := r.Receive(c.forge, h, bytes.NewReader(b))
			if !errors.Is(err, c.target) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, %v; want %v containing %q", d, err, c.target, c.msg)
			}
		})
	}
}

func TestReceiveTooLarge(t *testing.T) {
	r := receiver(t, testSecret)
	r.MaxBody = 1000
	body := bytes.Repeat([]byte(" "), 1001)
	_, err := r.Receive(GitHub, signed(GitHub, "push", "d", testSecret, body), bytes.NewReader(body))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestPingAndOtherEvents(t *testing.T) {
	body := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	r := receiver(t, testSecret)
	for _, c := range []struct {
		forge Forge
		event string
		ping  bool
	}{{GitHub, "ping", true}, {GitHub, "issues", false}, {GitLab, "Issue Hook", false},
		{Gitea, "create", false}, {Bitbucket, "diagnostics:ping", true}, {Bitbucket, "pullrequest:created", false}} {
		d, err := r.Receive(c.forge, signed(c.forge, c.event, "", testSecret, body), bytes.NewReader(body))
		if err != nil || d.Push != nil || d.Ping != c.ping {
			t.Errorf("%s %s: got %+v, %v; want ping=%v and no push", c.forge, c.event, d, err, c.ping)
		}
	}
}

func TestNaming(t *testing.T) {
	body := load(t, "github-push.json")
	r := receiver(t, "github.com/codertocat/* "+testSecret)
	r.Lowercase, r.RepoPrefix = true, "github.com/"
	d, err := r.Receive(GitHub, signed(GitHub, "push", "n", testSecret, body), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if d.Push.Repo != "github.com/codertocat/hello-world" {
		t.Errorf("repo %q", d.Push.Repo)
	}
}

func TestParseSecrets(t *testing.T) {
	for _, c := range []struct{ name, file, err string }{
		{"one", testSecret + "\n", ""},
		{"globs", "# comment\n\nacme/* " + testSecret + "\nother/** " + testSecret + "x\n", ""},
		{"short", "acme/* short\n", "line 1: secret is 5 bytes"},
		{"three fields", "\nacme/* a b\n", "line 2: want SECRET or REPO_GLOB SECRET"},
		{"bad glob", "acme/.x " + testSecret, "line 1:"},
		{"empty", "# nothing\n", "no secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSecrets(strings.NewReader(c.file))
			if (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("got %v, want %q", err, c.err)
			}
		})
	}
}

// TestAlternateHeaders: Gitea's GitHub-style signature and Bitbucket Data
// Center's X-Request-Id are accepted too.
func TestAlternateHeaders(t *testing.T) {
	r := receiver(t, testSecret)
	gitea := load(t, "gitea-push.json")
	h := signed(Gitea, "push", "g1", testSecret, gitea)
	h.Del("X-Gitea-Signature")
	h.Set("X-Hub-Signature-256", "sha256="+mac(testSecret, gitea))
	if d, err := r.Receive(Gitea, h, bytes.NewReader(gitea)); err != nil || d.Push.ID != "gitea:g1" {
		t.Errorf("gitea with X-Hub-Signature-256: %+v, %v", d, err)
	}
	dc := load(t, "bitbucket-dc-refs-changed.json")
	h = signed(Bitbucket, "repo:refs_changed", "", testSecret, dc)
	h.Set("X-Request-Id", "dc-7")
	if d, err := r.Receive(Bitbucket, h, bytes.NewReader(dc)); err != nil || d.Push.ID != "bitbucket:dc-7" {
		t.Errorf("data center with X-Request-Id: %+v, %v", d, err)
	}
}
