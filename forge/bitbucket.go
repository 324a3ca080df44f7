package forge

import (
	"fmt"
	"net/http"
	"time"

	"github.com/refcast/refcast/bus"
)

// bitbucketRef is one side of a Bitbucket Cloud change: a branch or tag and
// the commit it points at; null for a created or deleted ref.
type bitbucketRef struct {
	Type   string `json:"type"` // "branch", "tag" (or "named_branch", "bookmark")
	Name   string `json:"name"`
	Target struct {
		Hash    string `json:"hash"`
		Message string `json:"message"`
		Date    string `json:"date"`
		Author  struct {
			Raw  string `json:"raw"` // "Name <email>"
			User struct {
				DisplayName string `json:"display_name"`
			} `json:"user"`
		} `json:"author"`
	} `json:"target"`
}

// bitbucketCloudPush is Bitbucket Cloud's repo:push payload: several
// changes in one push, each commits list cut at 5 ("truncated").
type bitbucketCloudPush struct {
	Actor struct {
		Nickname    string `json:"nickname"`
		DisplayName string `json:"display_name"`
		Username    string `json:"username"`
	} `json:"actor"`
	Repository struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Push struct {
		Changes []struct {
			Old       *bitbucketRef `json:"old"`
			New       *bitbucketRef `json:"new"`
			Forced    bool          `json:"forced"`
			Truncated bool          `json:"truncated"`
			Commits   []struct {
				Hash string `json:"hash"`
			} `json:"commits"`
		} `json:"changes"`
	} `json:"push"`
}

// bitbucketDCPush is Bitbucket Data Center's (Server's) repo:refs_changed
// payload: full ref ids and hashes, no commit details.
type bitbucketDCPush struct {
	Actor struct {
		Name        string `json:"name"`
		DisplayName string `json:"displayName"`
	} `json:"actor"`
	Repository struct {
		Slug    string `json:"slug"`
		Project struct {
			Key string `json:"key"`
		} `json:"project"`
	} `json:"repository"`
	Changes []struct {
		Ref struct {
			ID string `json:"id"`
		} `json:"ref"`
		RefID    string `json:"refId"`
		FromHash string `json:"fromHash"`
		ToHash   string `json:"toHash"`
	} `json:"changes"`
}

// translateBitbucket reads a Bitbucket delivery: X-Event-Key names the
// event ("repo:push" from Cloud, "repo:refs_changed" from Data Center),
// X-Request-UUID (Cloud) or X-Request-Id (Data Center) is its id.
func translateBitbucket(h http.Header, body []byte, n Naming, now time.Time) (*Delivery, error) {
	ev := h.Get("X-Event-Key")
	d := &Delivery{Forge: Bitbucket, Event: ev}
	switch ev {
	case "":
		return nil, fmt.Errorf("%w: missing X-Event-Key header", ErrMalformed)
	case "diagnostics:ping":
		d.Ping = true
		return d, nil
	case "repo:push", "repo:refs_changed":
	default:
		return d, nil
	}
	id, err := deliveryID(Bitbucket, h, "X-Request-UUID", "X-Request-Id")
	if err != nil {
		return nil, err
	}
	if ev == "repo:push" {
		d.Push, err = bitbucketCloud(body, id, n, now)
	} else {
		d.Push, err = bitbucketDC(body, id, n, now)
	}
	return d, err
}

func bitbucketCloud(body []byte, id string, n Naming, now time.Time) (*bus.Push, error) {
	var p bitbucketCloudPush
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	repo, err := n.repo(p.Repository.FullName, "repository.full_name")
	if err != nil {
		return nil, err
	}
	push := &bus.Push{ID: id, Repo: repo, Time: now, Source: string(Bitbucket),
		Pusher: pusher(p.Actor.Nickname, p.Actor.Username, p.Actor.DisplayName)}
	if len(p.Push.Changes) > bus.MaxUpdatesPerPush {
		return nil, fmt.Errorf("%w: push.changes has %d entries, at most %d allowed", ErrUnacceptable, len(p.Push.Changes), bus.MaxUpdatesPerPush)
	}
	for i, c := range p.Push.Changes {
		field := fmt.Sprintf("push.changes[%d].", i)
		side := c.New
		if side == nil {
			side = c.Old
		}
		if side == nil {
			return nil, fmt.Errorf("%w: %sold and %snew are both null", ErrUnacceptable, field, field)
		}
		ref := "refs/heads/" + side.Name
		if side.Type == "tag" {
			ref = "refs/tags/" + side.Name
		}
		old, new := "", ""
		if c.Old != nil {
			old = c.Old.Target.Hash
		}
		if c.New != nil {
			new = c.New.Target.Hash
		}
		zero := bus.ZeroSHA1
		if len(old) == 64 || len(new) == 64 {
			zero = bus.ZeroSHA256
		}
		if old == "" {
			old = zero
		}
		if new == "" {
			new = zero
		}
		u, err := update(ref, old, new, field)
		if err != nil {
			return nil, err
		}
		if c.New != nil {
			if u.Kind() == bus.KindUpdate {
				u.Forced = &c.Forced
			}
			if !c.Truncated {
				k := len(c.Commits)
				u.Commits = &k
			}
			t := c.New.Target
			author := t.Author.User.DisplayName
			if author == "" {
				author = t.Author.Raw
			}
			u.Commit = headCommit(t.Message, author, t.Date)
			u.Enriched = bus.EnrichPartial
		}
		push.Updates = append(push.Updates, u)
	}
	return finish(push)
}

func bitbucketDC(body []byte, id string, n Naming, now time.Time) (*bus.Push, error) {
	var p bitbucketDCPush
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	name := ""
	if p.Repository.Project.Key != "" && p.Repository.Slug != "" {
		name = p.Repository.Project.Key + "/" + p.Repository.Slug
	}
	repo, err := n.repo(name, "repository.project.key/repository.slug")
	if err != nil {
		return nil, err
	}
	push := &bus.Push{ID: id, Repo: repo, Time: now, Source: string(Bitbucket),
		Pusher: pusher(p.Actor.Name, p.Actor.DisplayName)}
	if len(p.Changes) > bus.MaxUpdatesPerPush {
		return nil, fmt.Errorf("%w: changes has %d entries, at most %d allowed", ErrUnacceptable, len(p.Changes), bus.MaxUpdatesPerPush)
	}
	for i, c := range p.Changes {
		ref := c.Ref.ID
		if ref == "" {
			ref = c.RefID
		}
		u, err := update(ref, c.FromHash, c.ToHash, fmt.Sprintf("changes[%d].", i))
		if err != nil {
			return nil, err
		}
		push.Updates = append(push.Updates, u)
	}
	return finish(push)
}
