package forge

import (
	"fmt"
	"net/http"
	"time"

	"github.com/refcast/refcast/bus"
)

// githubMaxCommits is the length at which GitHub truncates a push's
// commits array (its webhook documentation: "a maximum of 2048 commits").
const githubMaxCommits = 2048

// githubPush is the part of GitHub's push event payload refcast reads.
// Gitea sends the same shape (see gitea.go).
type githubPush struct {
	Ref     string       `json:"ref"`
	Before  string       `json:"before"`
	After   string       `json:"after"`
	Forced  bool         `json:"forced"`
	Deleted bool         `json:"deleted"`
	Commits []commitJSON `json:"commits"`
	// TotalCommits is Gitea's count when it cuts the commits array.
	TotalCommits int         `json:"total_commits"`
	HeadCommit   *commitJSON `json:"head_commit"`
	Repository   struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Pusher person `json:"pusher"`
	Sender person `json:"sender"`
}

// translateGitHub reads a GitHub delivery: X-GitHub-Event names the event,
// X-GitHub-Delivery is its id.
func translateGitHub(h http.Header, body []byte, n Naming, now time.Time) (*Delivery, error) {
	ev := h.Get("X-GitHub-Event")
	d := &Delivery{Forge: GitHub, Event: ev}
	switch ev {
	case "":
		return nil, fmt.Errorf("%w: missing X-GitHub-Event header", ErrMalformed)
	case "ping":
		d.Ping = true
		return d, nil
	case "push":
	default:
		return d, nil
	}
	id, err := deliveryID(GitHub, h, "X-GitHub-Delivery")
	if err != nil {
		return nil, err
	}
	var p githubPush
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	d.Push, err = p.push(GitHub, id, n, now)
	return d, err
}

// push translates a GitHub-shaped push payload.
func (p *githubPush) push(f Forge, id string, n Naming, now time.Time) (*bus.Push, error) {
	repo, err := n.repo(p.Repository.FullName, "repository.full_name")
	if err != nil {
		return nil, err
	}
	u, err := update(p.Ref, p.Before, p.After, "")
	if err != nil {
		return nil, err
	}
	if u.Kind() != bus.KindDelete {
		if f == GitHub && u.Kind() == bus.KindUpdate {
			u.Forced = &p.Forced
		}
		c := max(len(p.Commits), p.TotalCommits)
		u.Commits = &c
		u.CommitsMore = f == GitHub && c >= githubMaxCommits
		if hc := p.HeadCommit; hc != nil {
			u.Commit = headCommit(hc.Message, hc.Author.Name, hc.Timestamp)
			// An annotated tag's after is the tag object; head_commit is
			// the commit it points at.
			if isTag(u.Ref) && hc.ID != u.New && bus.ValidateObjectID(hc.ID) == nil && len(hc.ID) == len(u.New) {
				u.Peeled = hc.ID
			}
		}
		u.Enriched = bus.EnrichPartial
	}
	return finish(&bus.Push{
		ID:      id,
		Repo:    repo,
		Pusher:  pusher(p.Pusher.Name, p.Pusher.Login, p.Pusher.Username, p.Sender.Login),
		Time:    now,
		Source:  string(f),
		Updates: []bus.RefUpdate{u},
	})
}
