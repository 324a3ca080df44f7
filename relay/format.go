package relay

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/refcast/refcast/bus"
)

// Format builds the request that delivers one update to a target. It
// returns the request and its body (kept for a dead letter). The request
// must be the same, byte for byte, on every call for the same update and
// delivery id: receivers deduplicate on the delivery id and check the
// signature over the body.
type Format interface {
	Name() string
	Request(ctx context.Context, t *Target, u Update, id string) (*http.Request, []byte, error)
}

// Formats lists the format names ParseFormat knows.
var Formats = []string{"github", "gitlab", "generic-hmac", "jenkins", "refcast"}

// ParseFormat returns the format named name.
func ParseFormat(name string) (Format, error) {
	switch name {
	case "github":
		return githubFormat{}, nil
	case "gitlab":
		return gitlabFormat{}, nil
	case "generic-hmac":
		return eventFormat{name: "generic-hmac"}, nil
	case "refcast":
		return eventFormat{name: "refcast"}, nil
	case "jenkins":
		return jenkinsFormat{}, nil
	}
	return nil, fmt.Errorf("unknown format %q: use one of %s", name, strings.Join(Formats, ", "))
}

// Sign is the hex HMAC of body with secret.
func Sign(h func() hash.Hash, secret, body []byte) string {
	m := hmac.New(h, secret)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func postJSON(ctx context.Context, t *Target, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// eventFormat sends refcast's event JSON as is, signed with
// X-Signature: sha256=<hex> (what Flux's generic-hmac Receiver checks).
// The refcast format adds headers naming the delivery and the event.
type eventFormat struct{ name string }

func (f eventFormat) Name() string { return f.name }

func (f eventFormat) Request(ctx context.Context, t *Target, u Update, id string) (*http.Request, []byte, error) {
	body, err := json.Marshal(u.Event)
	if err != nil {
		return nil, nil, err
	}
	req, err := postJSON(ctx, t, body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("X-Signature", "sha256="+Sign(sha256.New, t.Secret, body))
	if f.name == "refcast" {
		req.Header.Set("X-Refcast-Delivery", id)
		req.Header.Set("X-Refcast-Event", "ref")
		if u.Reset {
			req.Header.Set("X-Refcast-Reset", "true")
		}
	}
	return req, body, nil
}

// ghPush is the part of GitHub's push event body that receivers read
// (Argo CD, Flux's github Receiver, Tekton's GitHub interceptor and
// go-playground/webhooks parse these fields).
type ghPush struct {
	Ref        string       `json:"ref"`
	Before     string       `json:"before"`
	After      string       `json:"after"`
	Created    bool         `json:"created"`
	Deleted    bool         `json:"deleted"`
	Forced     bool         `json:"forced"`
	BaseRef    *string      `json:"base_ref"`
	Compare    string       `json:"compare"`
	Commits    []ghCommit   `json:"commits"`
	HeadCommit *ghCommit    `json:"head_commit"`
	Repository ghRepository `json:"repository"`
	Pusher     ghPerson     `json:"pusher"`
	Sender     ghSender     `json:"sender"`
	// Refcast carries what GitHub's body has no place for.
	Refcast ghRefcast `json:"refcast"`
}

type ghCommit struct {
	ID        string   `json:"id"`
	TreeID    string   `json:"tree_id"`
	Distinct  bool     `json:"distinct"`
	Message   string   `json:"message"`
	Timestamp string   `json:"timestamp,omitempty"`
	URL       string   `json:"url"`
	Author    ghPerson `json:"author"`
	Committer ghPerson `json:"committer"`
	Added     []string `json:"added"`
	Removed   []string `json:"removed"`
	Modified  []string `json:"modified"`
}

type ghPerson struct {
	Name     string `json:"name"`
	Email    string `json:"email"`
	Username string `json:"username,omitempty"`
}

type ghSender struct {
	Login string `json:"login"`
}

type ghRepository struct {
	Name          string `json:"name"`
	FullName      string `json:"full_name"`
	HTMLURL       string `json:"html_url"`
	URL           string `json:"url"`
	CloneURL      string `json:"clone_url"`
	GitURL        string `json:"git_url"`
	SSHURL        string `json:"ssh_url"`
	DefaultBranch string `json:"default_branch"`
	MasterBranch  string `json:"master_branch"`
	Private       bool   `json:"private"`
}

type ghRefcast struct {
	Kind    bus.Kind `json:"kind"`
	Reset   bool     `json:"reset,omitempty"`
	Commits *int     `json:"commits,omitempty"` // commits in the update, when counted
}

// githubFormat is GitHub's push event, one per ref update.
type githubFormat struct{}

func (githubFormat) Name() string { return "github" }

func (githubFormat) Request(ctx context.Context, t *Target, u Update, id string) (*http.Request, []byte, error) {
	e := u.Event
	repoURL := t.repoURL(e.Repo)
	p := ghPush{
		Ref: e.Ref, Before: zeroIfEmpty(e.Old), After: zeroIfEmpty(e.New),
		Created: e.Kind == bus.KindCreate, Deleted: e.Kind == bus.KindDelete,
		Forced:  e.Forced != nil && *e.Forced,
		Compare: repoURL,
		Commits: []ghCommit{},
		Repository: ghRepository{
			Name: path.Base(e.Repo), FullName: e.Repo, HTMLURL: repoURL, URL: repoURL,
			CloneURL: repoURL, GitURL: repoURL, SSHURL: repoURL,
			DefaultBranch: t.DefaultBranch, MasterBranch: t.DefaultBranch,
		},
		Pusher:  ghPerson{Name: e.Pusher},
		Sender:  ghSender{Login: e.Pusher},
		Refcast: ghRefcast{Kind: e.Kind, Reset: u.Reset, Commits: e.Commits},
	}
	if e.Commit != nil && e.Kind != bus.KindDelete {
		c := ghCommit{
			ID: e.New, Distinct: true, Message: e.Commit.Subject, URL: repoURL,
			Author: ghPerson{Name: e.Commit.Author}, Committer: ghPerson{Name: e.Commit.Author},
			Added: []string{}, Removed: []string{}, Modified: []string{},
		}
		if !e.Commit.Time.IsZero() {
			c.Timestamp = e.Commit.Time.Format(time.RFC3339)
		}
		p.HeadCommit = &c
		p.Commits = append(p.Commits, c)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, nil, err
	}
	req, err := postJSON(ctx, t, body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", "sha256="+Sign(sha256.New, t.Secret, body))
	req.Header.Set("X-Hub-Signature", "sha1="+Sign(sha1.New, t.Secret, body))
	return req, body, nil
}

func zeroIfEmpty(id string) string {
	if id == "" {
		return bus.ZeroSHA1
	}
	return id
}

// glPush is the part of GitLab's push and tag push hook bodies that
// receivers read (Argo CD, Flux's gitlab Receiver, Jenkins' GitLab plugin).
type glPush struct {
	ObjectKind        string       `json:"object_kind"`
	EventName         string       `json:"event_name"`
	Before            string       `json:"before"`
	After             string       `json:"after"`
	Ref               string       `json:"ref"`
	CheckoutSHA       *string      `json:"checkout_sha"`
	UserName          string       `json:"user_name"`
	UserUsername      string       `json:"user_username"`
	Project           glProject    `json:"project"`
	Repository        glRepository `json:"repository"`
	Commits           []glCommit   `json:"commits"`
	TotalCommitsCount int          `json:"total_commits_count"`
}

type glProject struct {
	Name              string `json:"name"`
	PathWithNamespace string `json:"path_with_namespace"`
	WebURL            string `json:"web_url"`
	GitHTTPURL        string `json:"git_http_url"`
	GitSSHURL         string `json:"git_ssh_url"`
	DefaultBranch     string `json:"default_branch"`
	HTTPURL           string `json:"http_url"`
}

type glRepository struct {
	Name       string `json:"name"`
	URL        string `json:"url"`
	Homepage   string `json:"homepage"`
	GitHTTPURL string `json:"git_http_url"`
	GitSSHURL  string `json:"git_ssh_url"`
}

type glCommit struct {
	ID        string   `json:"id"`
	Message   string   `json:"message"`
	Title     string   `json:"title"`
	Timestamp string   `json:"timestamp,omitempty"`
	URL       string   `json:"url"`
	Author    ghPerson `json:"author"`
}

// gitlabFormat is GitLab's Push Hook (Tag Push Hook for tags), with the
// secret as X-Gitlab-Token.
type gitlabFormat struct{}

func (gitlabFormat) Name() string { return "gitlab" }

func (gitlabFormat) Request(ctx context.Context, t *Target, u Update, id string) (*http.Request, []byte, error) {
	e := u.Event
	repoURL := t.repoURL(e.Repo)
	kind, event := "push", "Push Hook"
	if strings.HasPrefix(e.Ref, "refs/tags/") {
		kind, event = "tag_push", "Tag Push Hook"
	}
	p := glPush{
		ObjectKind: kind, EventName: kind, Before: zeroIfEmpty(e.Old), After: zeroIfEmpty(e.New), Ref: e.Ref,
		UserName: e.Pusher, UserUsername: e.Pusher, Commits: []glCommit{},
		Project: glProject{
			Name: path.Base(e.Repo), PathWithNamespace: e.Repo, WebURL: repoURL, GitHTTPURL: repoURL,
			GitSSHURL: repoURL, HTTPURL: repoURL, DefaultBranch: t.DefaultBranch,
		},
		Repository: glRepository{Name: path.Base(e.Repo), URL: repoURL, Homepage: repoURL, GitHTTPURL: repoURL, GitSSHURL: repoURL},
	}
	if e.Kind != bus.KindDelete {
		sha := e.New
		p.CheckoutSHA = &sha
	}
	if e.Commit != nil && e.Kind != bus.KindDelete {
		c := glCommit{ID: e.New, Message: e.Commit.Subject, Title: e.Commit.Subject, URL: repoURL, Author: ghPerson{Name: e.Commit.Author}}
		if !e.Commit.Time.IsZero() {
			c.Timestamp = e.Commit.Time.Format(time.RFC3339)
		}
		p.Commits = append(p.Commits, c)
	}
	p.TotalCommitsCount = len(p.Commits)
	if e.Commits != nil {
		p.TotalCommitsCount = *e.Commits
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, nil, err
	}
	req, err := postJSON(ctx, t, body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("X-Gitlab-Event", event)
	req.Header.Set("X-Gitlab-Token", string(t.Secret))
	req.Header.Set("X-Gitlab-Event-UUID", id)
	return req, body, nil
}

// jenkinsFormat is the git plugin's notifyCommit: POST
// {url}/git/notifyCommit?url=<repo URL>&branches=<branch>&sha1=<new>&token=<secret>.
// Jenkins then polls the jobs whose remote URL matches url.
type jenkinsFormat struct{}

func (jenkinsFormat) Name() string { return "jenkins" }

func (jenkinsFormat) Request(ctx context.Context, t *Target, u Update, id string) (*http.Request, []byte, error) {
	e := u.Event
	q := url.Values{}
	q.Set("url", t.repoURL(e.Repo))
	branch := strings.TrimPrefix(e.Ref, "refs/heads/")
	q.Set("branches", branch)
	if e.Kind != bus.KindDelete {
		q.Set("sha1", e.New)
	}
	q.Set("token", string(t.Secret))
	target := strings.TrimSuffix(t.URL, "/") + "/git/notifyCommit?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("X-Refcast-Delivery", id)
	return req, nil, nil
}
