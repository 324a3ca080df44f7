package hook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/refcast/refcast/bus"
)

// Sources, as carried in bus.Push.Source.
const (
	SourcePostReceive          = "post-receive"
	SourceReferenceTransaction = "reference-transaction"
)

// DefaultTimeout bounds the delivery of one hook run (spool flush and
// publish) when the caller does not choose.
const DefaultTimeout = 2 * time.Second

// NewPushID returns a fresh push id: "p-" then the time in nanoseconds
// since the epoch and 64 random bits, so ids sort roughly by time and never
// collide. It is generated once per push and kept in the spool file, so a
// retry reuses it and publishing stays idempotent.
func NewPushID(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "p-" + strconv.FormatInt(now.UnixNano(), 10) + "-" + hex.EncodeToString(b[:])
}

// BuildPushes groups updates into pushes of at most bus.MaxUpdatesPerPush
// updates each (a mirror push can carry more); when split, the pushes'
// ids are id-1, id-2, ... in order. It returns nil for no updates.
func BuildPushes(id, repo, pusher, source string, at time.Time, ups []bus.RefUpdate) []*bus.Push {
	var out []*bus.Push
	for i := 0; i < len(ups); i += bus.MaxUpdatesPerPush {
		chunk := ups[i:min(i+bus.MaxUpdatesPerPush, len(ups))]
		out = append(out, &bus.Push{ID: id, Repo: repo, Pusher: pusher, Time: at.UTC(), Source: source, Updates: chunk})
	}
	if len(out) > 1 {
		for i, p := range out {
			p.ID = fmt.Sprintf("%s-%d", id, i+1)
		}
	}
	return out
}

// Delivery is what Deliver did.
type Delivery struct {
	Published int      // pushes published now
	Spooled   []string // files written for pushes that could not be published
	Flushed   FlushResult
	// Err is why publishing failed, when it did: the warning a hook prints.
	// Pushes are spooled unless Err wraps bus.ErrInvalid (rejected).
	Err error
}

// Deliver publishes pushes in order within timeout, spool permitting: it
// first flushes what an earlier run spooled (so nothing overtakes it), and
// spools every push it could not publish (and, once one publish failed,
// every later one, again to keep the order). A push the destination
// rejects as invalid is reported in Delivery.Err and not spooled. pub may be
// nil (no destination configured): everything is spooled.
//
// The returned error is only for what would lose an update: the spool
// could not be written.
func Deliver(ctx context.Context, pub Publisher, sp *Spool, pushes []*bus.Push, timeout time.Duration, log *slog.Logger) (Delivery, error) {
	var d Delivery
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	if pub == nil {
		d.Err = errors.New("no destination configured (--url or --redis)")
	} else if pending, _ := sp.Pending(); len(pending) > 0 {
		d.Flushed, d.Err = sp.Flush(ctx, pub)
	}
	for _, p := range pushes {
		if d.Err == nil || !Retryable(d.Err) {
			err := pub.Publish(ctx, p)
			if err == nil {
				d.Published++
				continue
			}
			if !Retryable(err) {
				d.Err = err
				log.Warn("push rejected", slog.String("push", p.ID), slog.Any("error", err))
				continue
			}
			d.Err = err
		}
		file, err := sp.Write(p)
		if err != nil {
			return d, err
		}
		d.Spooled = append(d.Spooled, file)
	}
	return d, nil
}
