package fanout

// Counter is a monotonically rising count; prometheus.Counter is one.
type Counter interface {
	Inc()
	Add(float64)
}

// Gauge is a value that goes up and down; prometheus.Gauge is one.
type Gauge interface {
	Set(float64)
}

// Observer records a sample in a distribution; prometheus.Histogram is one.
type Observer interface {
	Observe(float64)
}

// Metrics are the counters the engine moves. The engine neither names nor
// registers them: the server does, so metric names stay in one place. Any
// field left nil counts nothing. The implementations must be safe for
// concurrent use; Counter and Observer are called on the dispatch path, so
// they must not block.
type Metrics struct {
	Connections Gauge   // registered streams and long-polls
	EventsIn    Counter // events read from the bus
	Deliveries  Counter // events queued to subscribers, one per subscriber
	Writes      Counter // successful writes to hijacked streams, one per batch
	// FanoutLatency: seconds from the engine's read of an event from the
	// bus feed to its being queued to every matching subscriber.
	FanoutLatency Observer
	// PublishAge: seconds from an event's Time (the push's time) to the
	// engine's read of it; a spooled or delayed push shows here, not in
	// FanoutLatency.
	PublishAge Observer
	Stalls     Counter // writes parked because a socket was full
	Coalesced  Counter // updates folded for mode=latest subscribers
	// BusReconnects counts bus errors that interrupted following: a failed
	// subscribe or an ended feed (the engine resubscribes), and each failed
	// read the bus reports while it retries by itself (bus.Message.Err).
	BusReconnects Counter
	// BusUp is 1 while the feed works (subscribed, no partition failing),
	// else 0.
	BusUp Gauge
	// BusOutage counts the seconds the feed was down, added when it comes
	// back (or when Run returns).
	BusOutage Counter
	Resets    Counter // partitions whose history was lost (bus resets)
	// Evictions returns the counter of streams the engine closed for a
	// reason: ReasonQueueFull, ReasonSlowClient, ReasonWriteError,
	// ReasonMemory.
	Evictions func(reason string) Counter
	// Rejected returns the counter of registrations refused by a limit:
	// "node_limit" or "client_limit".
	Rejected func(limit string) Counter
}

// withDefaults fills the nil fields with counters that count nothing.
func (m Metrics) withDefaults() Metrics {
	for _, g := range []*Gauge{&m.Connections, &m.BusUp} {
		if *g == nil {
			*g = discard{}
		}
	}
	for _, c := range []*Counter{&m.EventsIn, &m.Deliveries, &m.Writes, &m.Stalls, &m.Coalesced, &m.BusReconnects, &m.BusOutage, &m.Resets} {
		if *c == nil {
			*c = discard{}
		}
	}
	for _, o := range []*Observer{&m.FanoutLatency, &m.PublishAge} {
		if *o == nil {
			*o = discard{}
		}
	}
	if m.Evictions == nil {
		m.Evictions = func(string) Counter { return discard{} }
	}
	if m.Rejected == nil {
		m.Rejected = func(string) Counter { return discard{} }
	}
	return m
}

// discard counts nothing.
type discard struct{}

func (discard) Inc()            {}
func (discard) Add(float64)     {}
func (discard) Set(float64)     {}
func (discard) Observe(float64) {}

var (
	_ Counter  = discard{}
	_ Gauge    = discard{}
	_ Observer = discard{}
)
