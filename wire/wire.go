// Package wire is refcast's protocol: everything a node and its clients
// must agree on, in one place that both import. It holds the cursor and its
// codec and length limit, the SSE frame encoding and event names, the JSON
// payloads of frames and of /v1/refs, the endpoint paths and query
// parameter names, and the parsing of the Authorization header.
//
// The server (package server), the bot client (watch), the hook's
// publisher (hook) and the bench tool use these definitions instead of
// spelling them again, so a limit or a name cannot drift between the two
// ends of a connection. docs/protocol.md describes the protocol for people;
// this package is its source of truth.
//
// wire is not a client or a server: it does no I/O, holds no state and
// knows nothing of echo, Redis or SSE libraries. Besides the standard
// library it imports only bus, for the domain types a payload carries
// (bus.Event, bus.Kind, bus.Heads) and the partition bound.
package wire

// Endpoint paths of a node.
const (
	PathEvents  = "/v1/events"  // GET: the SSE stream
	PathRefs    = "/v1/refs"    // GET, HEAD: snapshot, delta, long-poll
	PathRepos   = "/v1/repos"   // GET: the repos a credential may read, paged
	PathHistory = "/v1/history" // GET: the last events of a subscription
	PathPublish = "/v1/publish" // POST: one push
	PathHooks   = "/v1/hooks"   // POST /v1/hooks/<forge>: a forge's push webhook
	PathHealth  = "/healthz"    // GET: the process answers
	PathReady   = "/readyz"     // GET: the node follows the bus and is not draining
	PathMetrics = "/metrics"    // GET: Prometheus metrics
)

// Query parameters of /v1/events and /v1/refs.
const (
	ParamRepo  = "repo"  // repo name or glob, repeatable, at least one
	ParamRef   = "ref"   // ref pattern, repeatable; "^" excludes
	ParamSince = "since" // a cursor to resume from (Last-Event-ID wins)
	ParamMode  = "mode"  // /v1/events: ModeAll or ModeLatest
	ParamWait  = "wait"  // /v1/refs: hold a long-poll up to this duration
	// ParamAccessToken carries a token for clients that cannot set
	// headers (a browser's EventSource). URLs end up in access logs: see
	// docs/security.md.
	ParamAccessToken = "access_token"
)

// Values of ParamMode.
const (
	ModeAll    = "all"    // every event (the default)
	ModeLatest = "latest" // a lagging client gets the latest change per ref
)

// Request and response headers with a protocol meaning.
const (
	HeaderAuthorization = "Authorization"
	// HeaderLastEventID carries the cursor of a reconnecting EventSource;
	// it wins over ParamSince.
	HeaderLastEventID = "Last-Event-ID"
)

// Event names of SSE frames. A client must skip names it does not know,
// keeping their id as its position.
const (
	EventRef   = "ref"   // a ref changed: data is a bus.Event
	EventSync  = "sync"  // a repo's refs were replaced from disk: data is a bus.Event of kind sync
	EventReset = "reset" // the node could not replay: data is a Reset
	EventHello = "hello" // the stream's opening is done: data is a Hello
	// EventMessage is what SSE calls a frame without an event line; a node
	// never sends one.
	EventMessage = "message"
)
