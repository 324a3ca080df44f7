// Package bus holds refcast's domain: the ref-update event, the push that
// groups updates, the Bus interface every transport implements, and the
// validators that keep bad names out of keys, logs and streams.
//
// It is not a transport: implementations live in subpackages named after
// what they wrap (bus/memory, bus/redis) and import this package, never each
// other.
package bus

import (
	"fmt"
	"strings"
	"time"
)

// SchemaVersion is the version of the event JSON schema, sent as "v" in every
// event. It changes only when a field changes meaning or disappears; new
// optional fields do not bump it.
const SchemaVersion = 1

// Kind says what an update did to a ref.
type Kind string

// Kinds of update. Create, Update and Delete come from the zero object id on
// the old or new side. Sync marks a state seed written by `refcast sync`: the
// repo's ref state was replaced wholesale, without one event per ref.
const (
	KindCreate Kind = "create"
	KindUpdate Kind = "update"
	KindDelete Kind = "delete"
	KindSync   Kind = "sync"
)

// Commit describes the commit a ref points at after the update, when the hook
// could learn it within its time budget.
type Commit struct {
	Subject string    `json:"subject,omitempty"`
	Author  string    `json:"author,omitempty"`
	Time    time.Time `json:"time,omitzero"`
}

// Enrichment states, carried in RefUpdate.Enriched.
const (
	EnrichFull    = "full"    // every enrichment field that applies was computed
	EnrichPartial = "partial" // the time budget ran out; some fields are missing
	EnrichNone    = "none"    // no enrichment was attempted or possible
)

// RefUpdate is one ref changed by a push, with what the hook learnt about it.
// Only Ref, Old and New are required; the rest is optional enrichment.
type RefUpdate struct {
	Ref string `json:"ref"`
	Old string `json:"old"`
	New string `json:"new"`

	// Forced is true for a non-fast-forward update of an existing ref. Nil
	// when unknown (not computed, or not meaningful as for create/delete).
	Forced *bool `json:"forced,omitempty"`
	// Commit is the new tip's commit (annotated tags are peeled first).
	Commit *Commit `json:"commit,omitempty"`
	// Commits counts the commits the update added, up to a bound; CommitsMore
	// says the real number is larger ("100+").
	Commits     *int `json:"commits,omitempty"`
	CommitsMore bool `json:"commits_more,omitempty"`
	// Peeled is the commit an annotated tag points at.
	Peeled string `json:"peeled,omitempty"`
	// Enriched is one of the Enrich* states; empty means none.
	Enriched string `json:"enriched,omitempty"`
}

// Kind derives the update's kind from the zero object ids (see KindOf).
func (u RefUpdate) Kind() Kind { return KindOf(u.Old, u.New) }

// KindOf is the kind of a change from object id old to new: a zero new is a
// delete, else a zero old is a create, else an update. It is the one
// definition for a single update and for the net change of several (a
// coalesced stream entry, a refs delta): a ref created and deleted since is
// a delete, which is what a reader holding it must do.
func KindOf(old, new string) Kind {
	switch {
	case IsZeroID(new):
		return KindDelete
	case IsZeroID(old):
		return KindCreate
	default:
		return KindUpdate
	}
}

// Push is the unit of publishing: the ref updates of one push (or one
// reference transaction), published all or nothing.
type Push struct {
	// ID groups the updates and makes publishing idempotent: publishing a
	// push whose ID was already published returns the original events and
	// appends nothing.
	ID     string    `json:"id"`
	Repo   string    `json:"repo"`
	Pusher string    `json:"pusher,omitempty"`
	Time   time.Time `json:"time"`
	// Source names what produced the push: "post-receive",
	// "reference-transaction", "sync" or "api".
	Source string `json:"source,omitempty"`
	// Seed marks a state seed from `refcast sync`: Updates is the repo's
	// complete ref state (Old ignored); it replaces the stored state and is
	// announced with a single KindSync event instead of one per ref.
	Seed bool `json:"seed,omitempty"`
	// Whole marks a push whose updates are every ref the repository has
	// after it, all of them creations: a new repository's first push, as
	// the hook sees it. Like a seed it replaces the stored state (a repo
	// deleted and created again leaves none of its old refs behind) and,
	// with Head, makes it complete for git clients; unlike a seed it is
	// announced as the push it is, one event per ref.
	Whole bool `json:"whole,omitempty"`
	// Head is HEAD's symbolic target after the push ("refs/heads/main"),
	// "" when unknown. A push that sets it promises every annotated tag
	// among its updates is peeled (see GitFields).
	Head    string      `json:"head,omitempty"`
	Updates []RefUpdate `json:"updates"`
}

// ReplacesState reports whether p replaces its repo's stored state rather
// than updating it: a seed or a whole push.
func (p *Push) ReplacesState() bool { return p.Seed || p.Whole }

// Event is one ref update as subscribers see it: the update, the push it
// belongs to, and its place in the bus's history.
type Event struct {
	V      int       `json:"v"`
	Repo   string    `json:"repo"`
	Ref    string    `json:"ref,omitempty"`
	Old    string    `json:"old,omitempty"`
	New    string    `json:"new,omitempty"`
	Kind   Kind      `json:"kind"`
	PushID string    `json:"push"`
	Time   time.Time `json:"time"`
	Pusher string    `json:"pusher,omitempty"`
	Source string    `json:"source,omitempty"`

	Forced      *bool   `json:"forced,omitempty"`
	Commit      *Commit `json:"commit,omitempty"`
	Commits     *int    `json:"commits,omitempty"`
	CommitsMore bool    `json:"commits_more,omitempty"`
	Peeled      string  `json:"peeled,omitempty"`
	Enriched    string  `json:"enriched,omitempty"`

	// Refs is the number of refs in the seeded state, for KindSync only.
	Refs int `json:"refs,omitempty"`

	// Partition and Seq place the event in the history: Seq counts from 1
	// within the partition and has no gaps. Set by the bus on publish.
	Partition int    `json:"-"`
	Seq       uint64 `json:"-"`
	// Prev and Chain identify the history of the partition's epoch up to
	// the event before this one and up to this one (Chain is
	// ChainNext(Prev, PushID)). Set by the bus on every read; 0 when
	// unknown (an entry written by a version without chains).
	Prev, Chain uint64 `json:"-"`
}

// Events expands a validated push into its events, without positions. A seed
// push becomes a single KindSync event.
func (p *Push) Events() []Event {
	base := Event{V: SchemaVersion, Repo: p.Repo, PushID: p.ID, Time: p.Time, Pusher: p.Pusher, Source: p.Source}
	if p.Seed {
		e := base
		e.Kind = KindSync
		e.Refs = len(p.Updates)
		return []Event{e}
	}
	out := make([]Event, len(p.Updates))
	for i, u := range p.Updates {
		e := base
		e.Ref, e.Old, e.New, e.Kind = u.Ref, u.Old, u.New, u.Kind()
		e.Forced, e.Commit, e.Commits, e.CommitsMore = u.Forced, u.Commit, u.Commits, u.CommitsMore
		e.Peeled, e.Enriched = u.Peeled, u.Enriched
		out[i] = e
	}
	return out
}

// Limits on a push, so one request cannot make an unbounded script or frame.
const (
	MaxUpdatesPerPush = 10000
	MaxPusherLen      = 256
	MaxPushIDLen      = 128
	MaxSubjectLen     = 1024
	MaxSourceLen      = 64
)

// MaxRefsPerSeed bounds a seed (Push.Seed), which carries a repo's whole
// state in one push so that it replaces the state atomically and a git
// client never sees half of it. A seed is one event whatever its size, so
// the per-push bound that keeps frames and subscriber queues small does
// not apply; what it costs is the one publish: about 110 bytes of JSON a
// ref (a 30-character name, a peel on a tenth of them), so 200,000 refs
// are about 22 MB of body, held once by the node that decodes it, and on
// Redis one script that holds the server for 0.6 to 1.3 s per 100,000
// refs (bus/redis BenchmarkSeed on 2 busy cores), well inside the bus's
// 5 s timeout. 200,000 is twice the 100,000-ref repositories the git
// front is measured on (docs/architecture.md, "Seeds").
const MaxRefsPerSeed = 200000

// Validate checks everything a publisher sends. The error names the first
// offending field so a hook or API client can fix its input.
func (p *Push) Validate() error {
	if err := ValidatePushID(p.ID); err != nil {
		return err
	}
	if err := ValidateRepo(p.Repo); err != nil {
		return err
	}
	if len(p.Pusher) > MaxPusherLen || !printable(p.Pusher) {
		return fmt.Errorf("%w: pusher must be at most %d printable characters", ErrInvalid, MaxPusherLen)
	}
	if len(p.Source) > MaxSourceLen || !printable(p.Source) {
		return fmt.Errorf("%w: source must be at most %d printable characters", ErrInvalid, MaxSourceLen)
	}
	if err := validateHead(p.Head); err != nil {
		return err
	}
	if p.Time.IsZero() {
		return fmt.Errorf("%w: push time is missing", ErrInvalid)
	}
	if len(p.Updates) == 0 && !p.Seed {
		return fmt.Errorf("%w: push has no updates", ErrInvalid)
	}
	if p.Whole && p.Seed {
		return fmt.Errorf("%w: a push is whole or a seed, not both (a seed lists every ref already)", ErrInvalid)
	}
	switch {
	case p.Seed && len(p.Updates) > MaxRefsPerSeed:
		return fmt.Errorf("%w: seed has %d refs, at most %d allowed", ErrInvalid, len(p.Updates), MaxRefsPerSeed)
	case !p.Seed && len(p.Updates) > MaxUpdatesPerPush:
		return fmt.Errorf("%w: push has %d updates, at most %d allowed", ErrInvalid, len(p.Updates), MaxUpdatesPerPush)
	}
	seen := make(map[string]struct{}, len(p.Updates))
	for i, u := range p.Updates {
		if err := u.validate(p.Seed); err != nil {
			return fmt.Errorf("update %d: %w", i+1, err)
		}
		// A repository has one object format, so one push has one id
		// length; a mix is a bug or a forgery, never a real push.
		if n := len(p.Updates[0].New); len(u.New) != n || (!p.Seed && len(u.Old) != n) || (u.Peeled != "" && len(u.Peeled) != n) {
			return fmt.Errorf("update %d: %w: object ids mix SHA-1 (40 hex digits) and SHA-256 (64) in one push", i+1, ErrInvalid)
		}
		if p.Whole && !IsZeroID(u.Old) {
			return fmt.Errorf("update %d: %w: a whole push only creates refs (old must be the zero id)", i+1, ErrInvalid)
		}
		if _, dup := seen[u.Ref]; dup {
			return fmt.Errorf("update %d: %w: ref %q appears twice in one push", i+1, ErrInvalid, u.Ref)
		}
		seen[u.Ref] = struct{}{}
	}
	return nil
}

func (u RefUpdate) validate(seed bool) error {
	if err := ValidateRef(u.Ref); err != nil {
		return err
	}
	if err := ValidateObjectID(u.New); err != nil {
		return fmt.Errorf("new: %w", err)
	}
	if u.Peeled != "" {
		if err := ValidateObjectID(u.Peeled); err != nil {
			return fmt.Errorf("peeled: %w", err)
		}
	}
	if seed {
		if IsZeroID(u.New) {
			return fmt.Errorf("%w: a seed cannot contain a deleted ref", ErrInvalid)
		}
		return nil
	}
	if err := ValidateObjectID(u.Old); err != nil {
		return fmt.Errorf("old: %w", err)
	}
	if len(u.Old) != len(u.New) {
		return fmt.Errorf("%w: old and new object ids differ in length (SHA-1 vs SHA-256)", ErrInvalid)
	}
	if u.Old == u.New {
		return fmt.Errorf("%w: old and new object ids are equal", ErrInvalid)
	}
	if u.Commit != nil {
		if len(u.Commit.Subject) > MaxSubjectLen || len(u.Commit.Author) > MaxSubjectLen {
			return fmt.Errorf("%w: commit subject and author must be at most %d bytes", ErrInvalid, MaxSubjectLen)
		}
	}
	switch u.Enriched {
	case "", EnrichFull, EnrichPartial, EnrichNone:
	default:
		return fmt.Errorf("%w: enriched must be one of full, partial, none", ErrInvalid)
	}
	return nil
}

func printable(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0xfffd }) < 0
}
