package fanout

import (
	"log/slog"
	"runtime"
	"time"
)

// Defaults for Options.
const (
	// DefaultHeartbeat is how long a stream may stay silent before it is
	// sent a comment line, so proxies and clients see it alive.
	DefaultHeartbeat = 15 * time.Second
	// DefaultRetry is the base of the jittered retry: hint.
	DefaultRetry = 2 * time.Second
	// DefaultWriteTimeout is how long a stream may stay stuck (its socket
	// full) before it is evicted.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultStallTimeout is how long a writer waits on one full socket of
	// a client known to read before parking it (others are parked at
	// once): long enough for a busy but healthy reader to make room, short
	// enough that a crowd of slow ones costs little.
	DefaultStallTimeout = 200 * time.Microsecond
	// DefaultMaxQueue is the frames queued per subscriber before it is
	// evicted (or, in mode=latest, its queue folded by ref).
	DefaultMaxQueue = 256
	// DefaultMaxConnections is the streams and long-polls one node takes.
	DefaultMaxConnections = 50000
	// DefaultMaxPerClient is the streams per client key: 0, unlimited.
	DefaultMaxPerClient = 0
	// DefaultMaxQueuedBytes bounds the bytes a node's streams hold in
	// queued and unwritten frames (see memory.go for how they are
	// counted). 16 MiB: 2,000 streams that never read and a burst of
	// 6,000 events of 2.3 KB keep the heap 36-59 MiB above idle
	// (BenchmarkStalledReaders, quiet and loaded 2-core machine; the
	// target is 64), where 32 MiB gave 58-69: the collector lets the heap
	// grow to twice what is live, and what the bound counts is most of
	// what is live. 20 MiB gave 48-61. The readers' own backlog is of
	// bare frames (frame.bare), and shed spares it up to twice the bound;
	// one push at the limits (4 MiB of updates, encoded and decoded,
	// about 10 MiB) fits.
	DefaultMaxQueuedBytes = 16 << 20
	// DefaultBatchDelay spaces the writes to a busy connection.
	DefaultBatchDelay = 10 * time.Millisecond
)

// Options configure an Engine. Zero values take the defaults above.
type Options struct {
	Heartbeat    time.Duration // comment line on streams silent this long
	Retry        time.Duration // base of the jittered retry: hint
	WriteTimeout time.Duration // a stream stuck this long is evicted; the handler path's write deadline
	StallTimeout time.Duration // how long a writer waits on one full socket of a client known to read
	MaxQueue     int           // frames queued per subscriber before eviction
	// MaxQueuedBytes bounds the bytes all streams hold in queued and
	// unwritten frames: past it streams are evicted (ReasonMemory), those
	// whose client is the cause first; readers whose backlog other
	// streams share only past twice it (see shed).
	// DefaultMaxQueuedBytes when 0 or less.
	MaxQueuedBytes int64
	MaxConnections int // streams and long-polls; Register fails beyond
	MaxPerClient   int // per client key (Spec.Client); 0 = unlimited
	// MaxPerAnonymous is the streams per client key of anonymous clients
	// (Spec.Anonymous), where stricter than MaxPerClient; 0 = no such
	// limit. The server sets it by default (server.DefaultMaxPerAnonymous).
	MaxPerAnonymous int
	Writers         int // writer goroutines; 2×GOMAXPROCS when 0
	// BatchDelay spaces the writes to a busy connection: one written less
	// than BatchDelay ago gets its next events when BatchDelay has passed,
	// together, so under a high event rate a connection costs one syscall
	// per batch instead of one per event. A connection not written for
	// BatchDelay is written at once, so an event arriving alone is not
	// delayed. DefaultBatchDelay when 0; negative turns batching off.
	BatchDelay time.Duration
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
	// Metrics are the counters the engine moves; nil fields count nothing.
	Metrics Metrics
}

// withDefaults returns o with zero fields set to the defaults.
func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Heartbeat, DefaultHeartbeat)
	def(&o.Retry, DefaultRetry)
	def(&o.WriteTimeout, DefaultWriteTimeout)
	def(&o.StallTimeout, DefaultStallTimeout)
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.MaxPerClient < 0 {
		o.MaxPerClient = DefaultMaxPerClient
	}
	o.MaxPerAnonymous = max(o.MaxPerAnonymous, 0)
	if o.Writers <= 0 {
		o.Writers = 2 * runtime.GOMAXPROCS(0)
	}
	if o.BatchDelay == 0 {
		o.BatchDelay = DefaultBatchDelay
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
