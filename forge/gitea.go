package forge

import (
	"fmt"
	"net/http"
	"time"
)

// translateGitea reads a Gitea (or Forgejo) delivery: X-Gitea-Event names
// the event, X-Gitea-Delivery is its id. Gitea's push payload has GitHub's
// shape without "forced"; its test delivery is a push of the last commit.
func translateGitea(h http.Header, body []byte, n Naming, now time.Time) (*Delivery, error) {
	ev := h.Get("X-Gitea-Event")
	if ev == "" {
		ev = h.Get("X-Forgejo-Event")
	}
	d := &Delivery{Forge: Gitea, Event: ev}
	switch ev {
	case "":
		return nil, fmt.Errorf("%w: missing X-Gitea-Event header", ErrMalformed)
	case "push":
	default:
		return d, nil
	}
	id, err := deliveryID(Gitea, h, "X-Gitea-Delivery", "X-Forgejo-Delivery")
	if err != nil {
		return nil, err
	}
	var p githubPush
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	if p.Pusher.Login == "" && p.Pusher.Username == "" {
		p.Pusher.Login = p.Sender.Login
	}
	// Gitea's pusher.name is unset; login and username are the account.
	p.Pusher.Name = ""
	d.Push, err = p.push(Gitea, id, n, now)
	return d, err
}
