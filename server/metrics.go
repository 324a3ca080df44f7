package server

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
	publishAge    prometheus.Histogram
	evictions     *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	stalls        prometheus.Counter
	coalesced     prometheus.Counter
	busReconnects prometheus.Counter
	busUp         prometheus.Gauge
	busOutage     prometheus.Counter
	replays       prometheus.Counter
	resets        prometheus.Counter
	snapshots     *prometheus.CounterVec
}

// newMetrics registers the node's collectors on reg, with the Go runtime's
// and the process's (go_*, process_*) and refcast_build_info for version
// ("" is "unknown").
func newMetrics(reg prometheus.Registerer, version string) *metrics {
	if version == "" {
		version = "unknown"
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "refcast_build_info", Help: "Always 1; the labels say the node's version and the Go release that built it.",
		ConstLabels: prometheus.Labels{"version": version, "go": runtime.Version()}})
	buildInfo.Set(1)
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
			Name: "refcast_fanout_latency_seconds", Help: "From the node's read of an event from the bus to its being queued to every matching subscriber.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		// 1 ms to about 9 h: a push is normally published within
		// milliseconds, but a hook's spool can hold one for hours.
		publishAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "refcast_publish_age_seconds", Help: "From the hook's push time to the node's read of the event from the bus.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 26)}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refcast_evictions_total", Help: "Streams closed by the node, by reason (queue_full, slow_client, write_error, memory)."}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refcast_rejected_total", Help: "Connections and requests refused by a limit (node_limit, client_limit, publish_rate, snapshot_rate)."}, []string{"limit"}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_stream_stalls_total", Help: "Writes parked because a client's socket was full."}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_coalesced_total", Help: "Queued updates folded into one for mode=latest subscribers."}),
		busReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_bus_reconnects_total", Help: "Bus errors that interrupted the node's feed: failed subscribes, ended feeds, and failed reads the bus retried."}),
		busUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "refcast_bus_up", Help: "1 while the node follows the bus feed without errors, else 0."}),
		busOutage: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_bus_outage_seconds_total", Help: "Seconds the node's bus feed was down, added when it comes back."}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_replays_total", Help: "Resumes served from the history."}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refcast_resets_total", Help: "Reset events sent (cursor too old, or history lost)."}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refcast_snapshot_requests_total", Help: "Requests to /v1/refs by outcome (full, reset, delta, not_modified)."}, []string{"outcome"}),
	}
	reg.MustRegister(m.connections, m.eventsIn, m.published, m.deliveries, m.writes, m.fanoutLatency,
		m.evictions, m.rejected, m.stalls, m.coalesced, m.busReconnects, m.replays, m.resets, m.snapshots,
		m.publishAge, m.busUp, m.busOutage, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every known label value starts at 0, so a series exists before its
	// first count: rate() and absence alerts see it, and docs checks can.
	for _, reason := range []string{fanout.ReasonQueueFull, fanout.ReasonSlowClient, fanout.ReasonWriteError, fanout.ReasonMemory} {
		m.evictions.WithLabelValues(reason)
	}
	for _, limit := range []string{"node_limit", "client_limit", "publish_rate", "snapshot_rate"} {
		m.rejected.WithLabelValues(limit)
	}
	for _, outcome := range []string{"full", "reset", "delta", "not_modified"} {
		m.snapshots.WithLabelValues(outcome)
	}
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
		PublishAge:    m.publishAge,
		BusUp:         m.busUp,
		BusOutage:     m.busOutage,
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
