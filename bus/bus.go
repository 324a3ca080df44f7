package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
)

// Errors shared by every implementation.
var (
	// ErrInvalid wraps every validation failure: the input was wrong and
	// retrying it unchanged will fail again.
	ErrInvalid = errors.New("invalid")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("bus closed")
	// ErrTruncated means the history no longer reaches back to the
	// requested position: it was trimmed, or the partition's epoch changed.
	ErrTruncated = errors.New("history truncated")
	// ErrUnavailable means the bus's backing store could not be reached.
	ErrUnavailable = errors.New("bus unavailable")
)

// Defaults and bounds every implementation applies to its options, kept here
// so the buses, the node's flags and the hook cannot drift apart.
const (
	// DefaultPartitions is the number of partitions repos are spread over
	// when the operator does not choose. Every node and hook of one
	// deployment must use the same number. A partition is the unit of
	// ordering and, on Redis Cluster, of sharding; each costs a subscription
	// one blocked Redis connection, so 16 spreads a cluster's load without
	// a node holding many connections per feed.
	DefaultPartitions = 16
	// MaxPartitions bounds the partition count: a subscription holds one
	// position (and on Redis one connection) per partition, and a cursor
	// carries one number per partition, so this number also bounds the
	// length of a cursor (wire.MaxCursorLen). 1,024 is far beyond what one
	// bus needs (16 serve thousands of repos) and keeps a cursor under
	// 14 KiB.
	MaxPartitions = 1024
	// DefaultHistory is how many events each partition keeps for resume
	// when the operator does not choose. At about 500 bytes an event, 16
	// partitions of 10,000 hold about 80 MB (docs/operations.md sizes Redis
	// by it).
	DefaultHistory = 10000
)

// CheckPartitions returns an ErrInvalid error unless n is 1 to
// MaxPartitions.
func CheckPartitions(n int) error {
	if n < 1 || n > MaxPartitions {
		return fmt.Errorf("%w: partitions must be 1 to %d, got %d", ErrInvalid, MaxPartitions, n)
	}
	return nil
}

// PartitionOf maps a repo to its partition: FNV-1a of the name, modulo n.
// All events of one repo share a partition, which is what orders them.
func PartitionOf(repo string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(repo))
	return int(h.Sum32() % uint32(n))
}

// PartitionHead describes one partition's history.
type PartitionHead struct {
	// Epoch identifies one life of the partition's history. It changes when
	// the history is lost (a store restarted without persistence, a
	// flushed database); positions from another epoch mean nothing.
	Epoch uint64
	// First is the oldest Seq still retained (Last+1 when empty) and Last the
	// newest Seq published (0 before the first).
	First, Last uint64
	// Chain is the chain of the history up to and including Last (see
	// ChainNext): 0 when Last is 0 or the chain is unknown.
	Chain uint64
}

// Heads is the state of every partition, indexed by partition number.
type Heads []PartitionHead

// RefState is a repo's current refs and the position they are current at:
// the state after every event of the partition up to and including Seq.
type RefState struct {
	Repo      string
	Refs      map[string]string // ref name -> object id
	Partition int
	Epoch     uint64
	Seq       uint64
	Chain     uint64 // the chain at Seq (see ChainNext); 0 when unknown

	// What git's ref advertisement needs besides Refs (see GitFields).
	// Head is HEAD's symbolic target, "" when unknown. Peeled maps each
	// annotated tag to the object it peels to. Complete says
	// Head is known and every annotated tag's peel is in Peeled: only then
	// may a git client be answered from this state.
	Head     string
	Peeled   map[string]string
	Complete bool
}

// Message is what a Subscription delivers: the next events of one partition,
// in order and without gaps, or a reset saying the partition's history was
// lost and continues from a new epoch.
type Message struct {
	Partition int
	// Events, ordered by Seq, each Seq one more than the one before.
	Events []Event
	// Reset is set when the partition's epoch changed: what was published
	// before is gone, and Head is where the new life starts. Events is empty.
	Reset bool
	Head  PartitionHead
	// Err, when set, says reading the partition failed and the bus is
	// retrying by itself from the same position, so nothing is lost;
	// Events is empty and Reset false. A bus that retries internally sends
	// one per failed attempt, and once the partition reads again, one
	// empty message (no Events, no Err, no Reset) saying so. Readers that
	// only want events may ignore both: they carry no data. Buses that end
	// the feed on an error instead (the subscriber resubscribes) never set
	// it. It exists so a node can report the bus's health (refcast_bus_up).
	Err error
}

// Subscription is a node's feed of everything published after a starting
// position. It is not per client: a node holds one and fans out itself.
type Subscription interface {
	// C delivers messages until the subscription is closed, then is closed.
	// The feed never drops: if the reader is slow, the bus waits (the
	// history is the buffer).
	C() <-chan Message
	// Close stops the feed and waits for its goroutines. Safe to call twice.
	Close() error
}

// Bus is what a node and a hook need from a transport. Implementations are
// safe for concurrent use.
//
// Ordering: within a partition (so within a repo), events are numbered in
// publish order, and every reader sees them in that order.
type Bus interface {
	// Publish validates and appends the push atomically: all its events
	// enter the history, the repo's ref state is updated, and subscribers
	// are woken, or nothing happens. Publishing a push ID again returns the
	// events of the first publish (same positions) and appends nothing.
	Publish(ctx context.Context, p *Push) ([]Event, error)
	// Subscribe returns a feed of every event published after from (one
	// entry per partition, as returned by Heads). A partition whose epoch
	// differs from from's, or whose history no longer reaches from, starts
	// with a Reset message. A Chain in from, when not 0, is the chain at
	// its Last: a bus whose history can be rewound under the same epoch
	// while it runs (Redis failing over to a lagging replica) also starts
	// with a Reset a partition whose chain there differs; 0 is unknown.
	Subscribe(ctx context.Context, from Heads) (Subscription, error)
	// History returns up to limit events of a partition with Seq > after,
	// in order, each with its Prev and Chain. It returns ErrTruncated if events after `after` were
	// trimmed or epoch is not the partition's current epoch.
	History(ctx context.Context, partition int, epoch, after uint64, limit int) ([]Event, error)
	// Heads returns every partition's epoch, retained range and the chain
	// at its last Seq.
	Heads(ctx context.Context) (Heads, error)
	// Refs returns a repo's current ref state (empty for an unknown repo).
	Refs(ctx context.Context, repo string) (RefState, error)
	// Repos lists the repos that have ref state, sorted, so a glob
	// subscription ("acme/*") can be given a snapshot.
	Repos(ctx context.Context) ([]string, error)
	// Partitions is the fixed number of partitions.
	Partitions() int
	// Close releases the bus; subscriptions end. Safe to call twice.
	Close() error
}

// HealthChecker is implemented by buses with a remote store, and by the
// embedded bus once it refuses publishes until a restart, for /readyz.
type HealthChecker interface {
	Ping(ctx context.Context) error
}
