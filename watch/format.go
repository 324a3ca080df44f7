package watch

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// FormatEvent renders an event as one human line, e.g.
//
//	2026-11-25T14:00:00Z acme/app refs/heads/main update 1a2b3c4..5d6e7f8 forced by alice: "subject"
//
// Names that contain anything but printable characters are quoted, so an
// event cannot move the cursor or recolour a terminal.
func FormatEvent(e *bus.Event) string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format(time.RFC3339))
	b.WriteByte(' ')
	b.WriteString(safe(e.Repo))
	switch e.Kind {
	case bus.KindSync:
		fmt.Fprintf(&b, " sync %d refs", e.Refs)
	default:
		if e.Ref != "" {
			b.WriteByte(' ')
			b.WriteString(safe(e.Ref))
		}
		b.WriteByte(' ')
		b.WriteString(safe(string(e.Kind)))
		switch e.Kind {
		case bus.KindCreate:
			b.WriteString(" " + short(e.New))
		case bus.KindDelete:
			b.WriteString(" " + short(e.Old))
		default:
			b.WriteString(" " + short(e.Old) + ".." + short(e.New))
		}
		if e.Forced != nil && *e.Forced {
			b.WriteString(" forced")
		}
	}
	if e.Pusher != "" {
		b.WriteString(" by " + safe(e.Pusher))
	}
	if e.Commit != nil && e.Commit.Subject != "" {
		b.WriteString(": " + strconv.Quote(e.Commit.Subject))
	}
	return b.String()
}

// FormatReset renders a reset as one human line stamped with now.
func FormatReset(r *wire.Reset, now time.Time) string {
	refs := 0
	for _, s := range r.Repos {
		refs += len(s.Refs)
	}
	return fmt.Sprintf("%s reset: %s; snapshot of %d repos, %d refs", now.UTC().Format(time.RFC3339), safeText(r.Reason), len(r.Repos), refs)
}

func short(id string) string {
	if len(id) > 7 {
		id = id[:7]
	}
	return safe(id)
}

// safe returns s, or s quoted when it holds a space or a character that is
// not printable.
func safe(s string) string {
	for _, r := range s {
		if r <= ' ' || r == 0x7f || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// safeText is like safe but lets spaces through, for prose.
func safeText(s string) string {
	for _, r := range s {
		if r < ' ' || r == 0x7f || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
