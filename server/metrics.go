package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/refcast/refcast/server/fanout"
)

// metrics are the node's Prometheus collectors, registered on the
// server's own registry (never the global one, so two nodes can share a
// process).
type metrics struct {
	connections   prometheus.Gauge
	eventsIn      prometheus.Counter
	published     prometheus.Counter
	deliveries    prometheus.Counter
	writes        prometheus.Counter
	fanoutLatency prometheus.Histogram
	evictions     *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	stalls        prometheus.Counter
	coalesced     prometheus.Counter
	busReconnects prometheus.Counter
	replays       prometheus.Counter
	resets        prometheus.Counter
	snapshots     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "refcast_connections", Help: "Open event streams and long-polls on this node."}),
		eventsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_events_received_total", Help: "Events this node read from the bus."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_events_published_total", Help: "Events published through this node's /v1/publish."}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_deliveries_total", Help: "Events queued to subscribers (one per matching subscriber)."}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_stream_writes_total", Help: "Write system calls to hijacked streams (one per batch)."}),
		fanoutLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "refcast_fanout_latency_seconds", Help: "From the hook's push time to the event being queued to every matching subscriber.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refcast_evictions_total", Help: "Streams closed by the node, by reason (queue_full, slow_client, write_error)."}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refcast_rejected_total", Help: "Connections and requests refused by a limit (node_limit, client_limit, publish_rate, snapshot_rate)."}, []string{"limit"}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_stream_stalls_total", Help: "Writes parked because a client's socket was full."}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_coalesced_total", Help: "Queued updates folded into one for mode=latest subscribers."}),
		busReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_bus_reconnects_total", Help: "Times the node resubscribed to the bus after its feed failed."}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_replays_total", Help: "Resumes served from the history."}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_resets_total", Help: "Reset events sent (cursor too old, or history lost)."}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refcast_snapshot_requests_total", Help: "Requests to /v1/refs by outcome (full, delta, not_modified)."}, []string{"outcome"}),
	}
	reg.MustRegister(m.connections, m.eventsIn, m.published, m.deliveries, m.writes, m.fanoutLatency,
		m.evictions, m.rejected, m.stalls, m.coalesced, m.busReconnects, m.replays, m.resets, m.snapshots)
	return m
}

// engine returns the collectors the fan-out engine moves.
func (m *metrics) engine() fanout.Metrics {
	return fanout.Metrics{
		Connections:   m.connections,
		EventsIn:      m.eventsIn,
		Deliveries:    m.deliveries,
		Writes:        m.writes,
		FanoutLatency: m.fanoutLatency,
		Stalls:        m.stalls,
		Coalesced:     m.coalesced,
		BusReconnects: m.busReconnects,
		Resets:        m.resets,
		Evictions:     func(reason string) fanout.Counter { return m.evictions.WithLabelValues(reason) },
		Rejected:      func(limit string) fanout.Counter { return m.rejected.WithLabelValues(limit) },
	}
}

// The Prometheus collectors are what the engine counts with.
var (
	_ fanout.Counter  = prometheus.Counter(nil)
	_ fanout.Gauge    = prometheus.Gauge(nil)
	_ fanout.Observer = prometheus.Histogram(nil)
)
