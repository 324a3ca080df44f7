package forge

import (
	"fmt"
	"net/http"
	"time"

	"github.com/refcast/refcast/bus"
)

// gitlabPush is the part of GitLab's Push Hook and Tag Push Hook payloads
// refcast reads. GitLab lists at most 20 commits and counts them all in
// total_commits_count.
type gitlabPush struct {
	ObjectKind        string       `json:"object_kind"`
	Ref               string       `json:"ref"`
	Before            string       `json:"before"`
	After             string       `json:"after"`
	CheckoutSHA       string       `json:"checkout_sha"`
	UserUsername      string       `json:"user_username"`
	UserName          string       `json:"user_name"`
	Commits           []commitJSON `json:"commits"`
	TotalCommitsCount int          `json:"total_commits_count"`
	Project           struct {
		PathWithNamespace string `json:"path_with_namespace"`
	} `json:"project"`
}

// translateGitLab reads a GitLab delivery: X-Gitlab-Event names the event
// ("Push Hook", "Tag Push Hook"), X-Gitlab-Event-UUID is its id. GitLab's
// "Test" button sends a Push Hook of the project's last push.
func translateGitLab(h http.Header, body []byte, n Naming, now time.Time) (*Delivery, error) {
	ev := h.Get("X-Gitlab-Event")
	d := &Delivery{Forge: GitLab, Event: ev}
	switch ev {
	case "":
		return nil, fmt.Errorf("%w: missing X-Gitlab-Event header", ErrMalformed)
	case "Push Hook", "Tag Push Hook":
	default:
		return d, nil
	}
	id, err := deliveryID(GitLab, h, "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID")
	if err != nil {
		return nil, err
	}
	var p gitlabPush
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	repo, err := n.repo(p.Project.PathWithNamespace, "project.path_with_namespace")
	if err != nil {
		return nil, err
	}
	u, err := update(p.Ref, p.Before, p.After, "")
	if err != nil {
		return nil, err
	}
	if u.Kind() != bus.KindDelete {
		c := max(p.TotalCommitsCount, len(p.Commits))
		u.Commits = &c
		// checkout_sha is the commit the ref now points at, peeled.
		head := p.CheckoutSHA
		if head == "" {
			head = u.New
		}
		for _, cm := range p.Commits {
			if cm.ID == head {
				u.Commit = headCommit(cm.Message, cm.Author.Name, cm.Timestamp)
				break
			}
		}
		if isTag(u.Ref) && head != u.New && bus.ValidateObjectID(head) == nil && len(head) == len(u.New) {
			u.Peeled = head
		}
		u.Enriched = bus.EnrichPartial
	}
	d.Push, err = finish(&bus.Push{
		ID:      id,
		Repo:    repo,
		Pusher:  pusher(p.UserUsername, p.UserName),
		Time:    now,
		Source:  string(GitLab),
		Updates: []bus.RefUpdate{u},
	})
	return d, err
}
