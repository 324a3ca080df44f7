package fanout

import (
	"time"

	"github.com/refcast/refcast/bus"
)

// Feed health: whether the node is following the bus, for the BusUp,
// BusReconnects and BusOutage metrics. The feed is up while the engine
// holds a subscription and no partition reports failing reads. A bus that
// retries by itself (Redis) keeps the subscription open through an outage
// and says so on the feed (bus.Message.Err, then an empty message when the
// partition reads again); one that ends the feed on an error makes the
// engine resubscribe. Both count as reconnects, once per error.

// feedHealth is the bus reader's view of the feed. Owned by the bus reader
// (read and follow); the metrics are what others see.
type feedHealth struct {
	subscribed bool             // a subscription is open
	failing    map[int]struct{} // partitions whose last read failed
	up         bool             // subscribed and nothing failing, as last reported
	downSince  time.Time        // when the feed went down; valid while !up
}

// feedStart is called when Run starts: the feed is down until the first
// subscription, so a bus unreachable at start counts as an outage.
func (e *Engine) feedStart(now time.Time) {
	e.health = feedHealth{failing: make(map[int]struct{}), downSince: now}
	e.metrics.BusUp.Set(0)
}

// feedSubscribed records a new subscription, or (ok false) its end or a
// failed attempt; a new subscription starts with no partition failing.
func (e *Engine) feedSubscribed(ok bool, now time.Time) {
	e.health.subscribed = ok
	clear(e.health.failing)
	e.feedUpdate(now)
}

// feedMessage records what a message says about its partition's reads:
// failing (Err), or reading again (anything else). It reports whether the
// message carries data to dispatch.
func (e *Engine) feedMessage(msg *bus.Message, now time.Time) bool {
	if msg.Err != nil {
		e.metrics.BusReconnects.Inc()
		if _, ok := e.health.failing[msg.Partition]; !ok {
			// Debug: the bus logs the outage once for all partitions
			// (one line when it starts, one when it ends); a line per
			// partition here would be the noise operators asked to lose.
			e.log.Debug("bus partition unavailable, the bus is retrying", "partition", msg.Partition, "err", msg.Err)
			e.health.failing[msg.Partition] = struct{}{}
			e.feedUpdate(now)
		}
		return false
	}
	if _, ok := e.health.failing[msg.Partition]; ok {
		delete(e.health.failing, msg.Partition)
		e.feedUpdate(now)
	}
	return msg.Reset || len(msg.Events) > 0
}

// feedUpdate moves BusUp and BusOutage when the feed changes state.
func (e *Engine) feedUpdate(now time.Time) {
	up := e.health.subscribed && len(e.health.failing) == 0
	if up == e.health.up {
		return
	}
	e.health.up = up
	if up {
		e.metrics.BusOutage.Add(now.Sub(e.health.downSince).Seconds())
		e.metrics.BusUp.Set(1)
		return
	}
	e.health.downSince = now
	e.metrics.BusUp.Set(0)
}

// feedStop is called when the reader returns: an outage in progress is
// counted up to now.
func (e *Engine) feedStop(now time.Time) {
	if !e.health.up {
		e.metrics.BusOutage.Add(now.Sub(e.health.downSince).Seconds())
	}
	e.health = feedHealth{}
	e.metrics.BusUp.Set(0)
}
