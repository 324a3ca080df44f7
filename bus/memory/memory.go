// Package memory is the in-process bus: refcast's embedded default for a
// single node with no Redis. It keeps a bounded history and the ref state of
// every repo in memory.
//
// It is not shared between processes: hooks reach an embedded node over
// HTTP (POST /v1/publish), and a tier of several nodes needs bus/redis.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/refcast/refcast/bus"
)

// Defaults for Options.
const (
	DefaultPushIDs   = 100000 // push ids remembered for idempotency
	DefaultFeedBatch = 256    // events per subscription message at most
)

// Options configure a Bus. Zero values take the defaults above.
type Options struct {
	Partitions int           // bus.DefaultPartitions when 0
	History    int           // events retained per partition; bus.DefaultHistory when 0
	MaxAge     time.Duration // events older than this are trimmed; 0 keeps by count only
	PushIDs    int           // how many push ids are remembered
	// Now is the clock, for tests; time.Now when nil.
	Now func() time.Time
}

// Bus is an in-memory bus.Bus.
type Bus struct {
	opts  Options
	parts []*partition // set at construction

	mu       sync.Mutex    // guards notify, closed, pushIDs, pushFIFO
	notify   chan struct{} // closed and replaced on every publish
	closed   bool
	done     chan struct{} // closed by Close
	pushIDs  map[string]pushRef
	pushFIFO []string

	subs sync.WaitGroup // subscription goroutines; waited for by Close
}

type pushRef struct {
	partition int
	first     uint64
}

type partition struct {
	mu     sync.RWMutex
	epoch  uint64                       // set at construction
	first  uint64                       // Seq of events[0]; guarded by mu
	chain  uint64                       // chain at the last Seq (bus.ChainNext); guarded by mu
	events []bus.Event                  // guarded by mu
	at     []time.Time                  // publish time of each event, for MaxAge; guarded by mu
	refs   map[string]map[string]string // repo -> ref -> id; guarded by mu
	git    map[string]map[string]string // repo -> reserved field (bus.GitFields) -> value, while it has refs; guarded by mu
}

var _ bus.Bus = (*Bus)(nil)

// New returns an empty bus.
func New(opts Options) (*Bus, error) {
	if opts.Partitions == 0 {
		opts.Partitions = bus.DefaultPartitions
	}
	if err := bus.CheckPartitions(opts.Partitions); err != nil {
		return nil, fmt.Errorf("memory bus: %w", err)
	}
	if opts.History == 0 {
		opts.History = bus.DefaultHistory
	}
	if opts.PushIDs == 0 {
		opts.PushIDs = DefaultPushIDs
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &Bus{
		opts:    opts,
		notify:  make(chan struct{}),
		done:    make(chan struct{}),
		pushIDs: make(map[string]pushRef),
	}
	for range opts.Partitions {
		b.parts = append(b.parts, &partition{epoch: newEpoch(), first: 1, refs: make(map[string]map[string]string), git: make(map[string]map[string]string)})
	}
	return b, nil
}

// newEpoch returns a random non-zero epoch.
func newEpoch() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if e := binary.BigEndian.Uint64(b[:]) >> 1; e != 0 { // 63 bits: safe in JSON and Lua
			return e
		}
	}
}

// Partitions implements bus.Bus.
func (b *Bus) Partitions() int { return len(b.parts) }

// Publish implements bus.Bus.
func (b *Bus) Publish(ctx context.Context, p *bus.Push) ([]bus.Event, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pi := bus.PartitionOf(p.Repo, len(b.parts))
	part := b.parts[pi]
	evs := p.Events()

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, bus.ErrClosed
	}
	if ref, ok := b.pushIDs[p.ID]; ok {
		b.mu.Unlock()
		for i := range evs {
			evs[i].Partition, evs[i].Seq = ref.partition, ref.first+uint64(i)
		}
		return evs, nil
	}

	part.mu.Lock()
	next := part.first + uint64(len(part.events))
	for i := range evs {
		evs[i].Partition, evs[i].Seq = pi, next+uint64(i)
		evs[i].Prev, evs[i].Chain = part.chain, bus.ChainNext(part.chain, p.ID)
		part.chain = evs[i].Chain
	}
	part.events = append(part.events, evs...)
	now := b.opts.Now()
	for range evs {
		part.at = append(part.at, now)
	}
	part.applyState(p)
	part.trim(b.opts.History, b.opts.MaxAge, b.opts.Now())
	part.mu.Unlock()

	b.rememberPush(p.ID, pushRef{partition: pi, first: next})
	close(b.notify)
	b.notify = make(chan struct{})
	b.mu.Unlock()
	return evs, nil
}

// rememberPush records a push id, forgetting the oldest past the bound.
// Called with b.mu held.
func (b *Bus) rememberPush(id string, r pushRef) {
	b.pushIDs[id] = r
	b.pushFIFO = append(b.pushFIFO, id)
	if over := len(b.pushFIFO) - b.opts.PushIDs; over > 0 {
		for _, old := range b.pushFIFO[:over] {
			delete(b.pushIDs, old)
		}
		b.pushFIFO = append(b.pushFIFO[:0:0], b.pushFIFO[over:]...)
	}
}

// applyState updates the ref state and its reserved git fields. Called
// with p.mu held.
func (part *partition) applyState(p *bus.Push) {
	refs, git := part.refs[p.Repo], part.git[p.Repo]
	if refs == nil {
		refs, git = make(map[string]string, len(p.Updates)), make(map[string]string)
	}
	if p.ApplyTo(refs, git) { // no refs, no state: the fields go with it
		delete(part.refs, p.Repo)
		delete(part.git, p.Repo)
		return
	}
	part.refs[p.Repo], part.git[p.Repo] = refs, git
}

// trim drops events beyond the count and age bounds. Called with p.mu held.
func (part *partition) trim(maxLen int, maxAge time.Duration, now time.Time) {
	drop := max(len(part.events)-maxLen, 0)
	if maxAge > 0 {
		cutoff := now.Add(-maxAge)
		// By publish time, not the push's own: a push spooled during an
		// outage and published later must not be trimmed on arrival.
		for drop < len(part.events) && part.at[drop].Before(cutoff) {
			drop++
		}
	}
	if drop > 0 {
		clear(part.events[:drop]) // let the strings go
		part.events = part.events[drop:]
		part.at = part.at[drop:]
		part.first += uint64(drop)
	}
}

// Heads implements bus.Bus.
func (b *Bus) Heads(ctx context.Context) (bus.Heads, error) {
	if b.isClosed() {
		return nil, bus.ErrClosed
	}
	h := make(bus.Heads, len(b.parts))
	for i, p := range b.parts {
		h[i] = p.head()
	}
	return h, nil
}

func (part *partition) head() bus.PartitionHead {
	part.mu.RLock()
	defer part.mu.RUnlock()
	return part.headLocked()
}

// headLocked is the head. Called with p.mu held.
func (part *partition) headLocked() bus.PartitionHead {
	return bus.PartitionHead{Epoch: part.epoch, First: part.first, Last: part.first + uint64(len(part.events)) - 1, Chain: part.chain}
}

// History implements bus.Bus.
func (b *Bus) History(ctx context.Context, pi int, epoch, after uint64, limit int) ([]bus.Event, error) {
	if b.isClosed() {
		return nil, bus.ErrClosed
	}
	if pi < 0 || pi >= len(b.parts) {
		return nil, fmt.Errorf("%w: partition %d out of range", bus.ErrInvalid, pi)
	}
	part := b.parts[pi]
	part.mu.RLock()
	defer part.mu.RUnlock()
	return part.read(epoch, after, limit)
}

// read copies events after a Seq. Called with p.mu held.
func (part *partition) read(epoch, after uint64, limit int) ([]bus.Event, error) {
	if epoch != part.epoch || after+1 < part.first {
		return nil, bus.ErrTruncated
	}
	i := after + 1 - part.first
	if i >= uint64(len(part.events)) {
		return nil, nil
	}
	n := min(uint64(len(part.events))-i, uint64(limit))
	return append([]bus.Event(nil), part.events[i:i+n]...), nil
}

// Refs implements bus.Bus.
func (b *Bus) Refs(ctx context.Context, repo string) (bus.RefState, error) {
	if err := bus.ValidateRepo(repo); err != nil {
		return bus.RefState{}, err
	}
	if b.isClosed() {
		return bus.RefState{}, bus.ErrClosed
	}
	pi := bus.PartitionOf(repo, len(b.parts))
	part := b.parts[pi]
	part.mu.RLock()
	defer part.mu.RUnlock()
	st := bus.RefState{Repo: repo, Refs: make(map[string]string, len(part.refs[repo])), Partition: pi, Epoch: part.epoch, Seq: part.first + uint64(len(part.events)) - 1, Chain: part.chain}
	for k, v := range part.refs[repo] {
		st.Refs[k] = v
	}
	st.SetGitFields(part.git[repo])
	return st, nil
}

// Repos implements bus.Bus.
func (b *Bus) Repos(ctx context.Context) ([]string, error) {
	if b.isClosed() {
		return nil, bus.ErrClosed
	}
	var out []string
	for _, part := range b.parts {
		part.mu.RLock()
		for repo := range part.refs {
			out = append(out, repo)
		}
		part.mu.RUnlock()
	}
	slices.Sort(out)
	return out, nil
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close implements bus.Bus: subscriptions end, and Close waits for their
// goroutines. Safe to call twice.
func (b *Bus) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.done)
	}
	b.mu.Unlock()
	b.subs.Wait()
	return nil
}

// Subscribe implements bus.Bus. One goroutine per subscription (a bus.Feed)
// reads the history after each publish; a slow reader only delays itself.
// Bus.Close waits for these goroutines.
func (b *Bus) Subscribe(ctx context.Context, from bus.Heads) (bus.Subscription, error) {
	if len(from) != len(b.parts) {
		return nil, fmt.Errorf("%w: subscribe from %d partitions, bus has %d", bus.ErrInvalid, len(from), len(b.parts))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
	return bus.StartFeed(ctx, b.done, &b.subs, from, feedSource{b}), nil
}

// feedSource reads a feed's messages from the partitions.
type feedSource struct{ b *Bus }

// Wake implements bus.FeedSource.
func (s feedSource) Wake() (<-chan struct{}, error) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.b.closed {
		return nil, bus.ErrClosed
	}
	return s.b.notify, nil
}

// Next implements bus.FeedSource.
func (s feedSource) Next(_ context.Context, pi int, at *bus.PartitionHead) (bus.Message, bool, error) {
	part := s.b.parts[pi]
	part.mu.RLock()
	defer part.mu.RUnlock()
	evs, err := part.read(at.Epoch, at.Last, DefaultFeedBatch)
	if err == nil && at.Last > part.first+uint64(len(part.events))-1 {
		err = bus.ErrTruncated // a position this history never reached
	}
	if err != nil { // another epoch, trimmed past us, or ahead: the reader must resync
		head := part.headLocked()
		*at = head
		return bus.Message{Partition: pi, Reset: true, Head: head}, true, nil
	}
	if len(evs) == 0 {
		return bus.Message{}, false, nil
	}
	at.Last = evs[len(evs)-1].Seq
	return bus.Message{Partition: pi, Events: evs}, true, nil
}
