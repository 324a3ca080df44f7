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
	Connections   Gauge    // registered streams and long-polls
	EventsIn      Counter  // events read from the bus
	Deliveries    Counter  // events queued to subscribers, one per subscriber
	Writes        Counter  // successful writes to hijacked streams, one per batch
	FanoutLatency Observer // seconds from an event's Time to its being queued to all
	Stalls        Counter  // writes parked because a socket was full
	Coalesced     Counter  // updates folded for mode=latest subscribers
	BusReconnects Counter  // resubscriptions after the bus feed failed
	Resets        Counter  // partitions whose history was lost (bus resets)
	// Evictions returns the counter of streams the engine closed for a
	// reason: ReasonQueueFull, ReasonSlowClient, ReasonWriteError.
	Evictions func(reason string) Counter
	// Rejected returns the counter of registrations refused by a limit:
	// "node_limit" or "client_limit".
	Rejected func(limit string) Counter
}

// withDefaults fills the nil fields with counters that count nothing.
func (m Metrics) withDefaults() Metrics {
	if m.Connections == nil {
		m.Connections = discard{}
	}
	for _, c := range []*Counter{&m.EventsIn, &m.Deliveries, &m.Writes, &m.Stalls, &m.Coalesced, &m.BusReconnects, &m.Resets} {
		if *c == nil {
			*c = discard{}
		}
	}
	if m.FanoutLatency == nil {
		m.FanoutLatency = discard{}
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
