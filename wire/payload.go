package wire

import "github.com/refcast/refcast/bus"

// JSON payloads. Field order is the order a node writes (alphabetical,
// as the maps it once wrote); a client must ignore fields it does not
// know. The data of EventRef and EventSync frames is a bus.Event.

// Hello is the data of the EventHello frame that ends a stream's opening:
// the client's position from here on (also the frame's id).
type Hello struct {
	Cursor string `json:"cursor"`
	// Hint says, for people, why the stream may stay silent: exact repos
	// with no refs known, and readable repos with similar names. Only on
	// streams opened without a cursor.
	Hint string `json:"hint,omitempty"`
}

// Reset is the data of an EventReset frame: the node could not replay what
// the client missed and sends the complete current state of the
// subscription's repos instead, and the cursor that state is at.
type Reset struct {
	Cursor string     `json:"cursor"`
	Reason string     `json:"reason"` // for people: why no replay
	Repos  []RepoRefs `json:"repos"`
}

// RepoRefs is one repo's refs in a snapshot: ref name to object id.
type RepoRefs struct {
	Repo string            `json:"repo"`
	Refs map[string]string `json:"refs"`
}

// Snapshot is the answer of GET /v1/refs without since=: the current refs
// of the filter's repos. Reset is set (and only then present) when a
// resume was asked for (If-None-Match) but could not be answered as one.
type Snapshot struct {
	Cursor string     `json:"cursor"`
	Hint   string     `json:"hint,omitempty"` // as Hello's
	Repos  []RepoRefs `json:"repos"`
	Reset  bool       `json:"reset,omitempty"`
}

// Delta is the answer of GET /v1/refs?since=: the net change of each ref
// between Since and Cursor. Changes is never null. A since= that cannot be
// answered as a delta is answered with a Snapshot whose Reset is true: a
// client tells them apart by that field.
type Delta struct {
	Changes []Change `json:"changes"`
	Cursor  string   `json:"cursor"`
	Reset   bool     `json:"reset"` // always false
	Since   string   `json:"since"`
}

// Change is one ref's net change in a Delta.
type Change struct {
	Repo string   `json:"repo"`
	Ref  string   `json:"ref"`
	Old  string   `json:"old"`
	New  string   `json:"new"`
	Kind bus.Kind `json:"kind"`
}

// Published is the answer of POST /v1/publish: how many events the push
// became, and, for a push that carried HEAD (bus.Push.Head, as the hook
// sends), GitState "incomplete" when the repo's state still lacks what git
// clients need (refs seeded before refcast kept HEAD and tag peels): the
// hook then seeds the repo once, as `refcast sync` would.
type Published struct {
	Published int    `json:"published"`
	GitState  string `json:"git_state,omitempty"`
}

// GitStateIncomplete is Published.GitState for a state that cannot answer
// git clients yet (they are proxied to the git server until it can).
const GitStateIncomplete = "incomplete"

// Error is the body of every error answer: a message for the client, and
// the HTTP status again.
type Error struct {
	Error  string `json:"error"`
	Status int    `json:"status,omitempty"`
}
