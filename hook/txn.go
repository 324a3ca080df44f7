package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/flock"
)

// What git passes a reference-transaction hook, and how refcast copes
// (verified against git 2.39; see docs/hook.md):
//
//   - An update whose old value git did not verify (`git update-ref REF NEW`
//     without OLD, a fetch into a mirror) arrives with the zero id as old,
//     exactly like a creation. The packed-refs backend's own transaction
//     (`git pack-refs`, run by gc and by receive-pack's auto-gc) says
//     "zero -> current value" for every ref it packs, and the loose refs it
//     then prunes arrive as "old -> zero": neither changes a ref.
//   - A delete runs two transactions (loose and packed), so each delete
//     arrives twice, once as "old -> zero" (or "zero -> zero" when unverified)
//     and once as "zero -> zero".
//
// So in the "prepared" state, while the refs are locked and still hold their
// old values, the hook records the current value of every ref that a line
// with a zero old value or a zero new value names. In the "committed" state
// it consumes those records: a zero-old line becomes an update from the
// recorded value (or nothing, when the value did not change), a delete is
// published once (by whichever of its two transactions commits first) and
// only if the ref is really gone afterwards. Records are kept in
// <GIT_DIR>/refcast-txn.json under a lock, and expire after txnRecordTTL.

const (
	txnStateName = "refcast-txn.json"
	txnRecordTTL = 5 * time.Minute
)

// txnRecord is a ref's value when a transaction touching it was prepared.
type txnRecord struct {
	Old string    `json:"old"` // "" when the ref did not exist
	At  time.Time `json:"at"`
}

// needsRecord says whether a line's truth depends on the ref's state.
func needsRecord(u bus.RefUpdate) bool { return bus.IsZeroID(u.Old) || bus.IsZeroID(u.New) }

// PrepareTransaction handles the "prepared" state: it records the current
// value of every ref whose line has a zero old or new id. Lines that are
// plain verified updates need nothing, and then no git command runs.
func (r *Repo) PrepareTransaction(ctx context.Context, lines []bus.RefUpdate) error {
	var refs []string
	for _, u := range lines {
		if needsRecord(u) {
			refs = append(refs, u.Ref)
		}
	}
	if len(refs) == 0 {
		return nil
	}
	cur, err := r.currentValues(ctx, refs)
	if err != nil {
		return err
	}
	now := time.Now()
	return r.withTxnState(ctx, func(st map[string]txnRecord) {
		for _, ref := range refs {
			st[ref] = txnRecord{Old: cur[ref], At: now}
		}
	})
}

// AbortTransaction handles the "aborted" state: the records of its refs are
// dropped.
func (r *Repo) AbortTransaction(ctx context.Context, lines []bus.RefUpdate) error {
	return r.withTxnState(ctx, func(st map[string]txnRecord) {
		for _, u := range lines {
			delete(st, u.Ref)
		}
	})
}

// CommitTransaction handles the "committed" state: it returns the updates
// that really happened, with honest old values where the prepared state
// could record them. A zero-old line without a record is published as a
// creation (its kind cannot be known); a delete without a record was
// published by its sibling transaction and is dropped.
func (r *Repo) CommitTransaction(ctx context.Context, lines []bus.RefUpdate) ([]bus.RefUpdate, error) {
	if !slices.ContainsFunc(lines, needsRecord) {
		// Plain verified updates (all a queued transaction holds): no
		// record to read, so no lock and no state file to touch.
		return lines, nil
	}
	var (
		out  []bus.RefUpdate
		dels []bus.RefUpdate
	)
	err := r.withTxnState(ctx, func(st map[string]txnRecord) {
		for _, u := range lines {
			if !needsRecord(u) {
				out = append(out, u)
				continue
			}
			rec, ok := st[u.Ref]
			delete(st, u.Ref)
			switch {
			case bus.IsZeroID(u.New):
				if !ok || rec.Old == "" || len(rec.Old) != len(u.New) {
					continue // published by the sibling transaction, or nothing to delete
				}
				u.Old = rec.Old
				dels = append(dels, u)
			case !ok || rec.Old == "": // a creation, or unknowable
				out = append(out, u)
			case rec.Old == u.New: // pack-refs, or a no-op
			default:
				u.Old = rec.Old
				out = append(out, u)
			}
		}
	})
	if err != nil || len(dels) == 0 {
		return out, err
	}
	names := make([]string, len(dels))
	for i, u := range dels {
		names[i] = u.Ref
	}
	cur, err := r.currentValues(ctx, names)
	if err != nil {
		return out, err
	}
	for _, u := range dels {
		if _, exists := cur[u.Ref]; !exists { // still there: a loose ref pruned by pack-refs
			out = append(out, u)
		}
	}
	// Keep the transaction's order for readers: the lines' order.
	order := make(map[string]int, len(lines))
	for i, u := range lines {
		order[u.Ref] = i
	}
	sortByOrder(out, order)
	return out, nil
}

func sortByOrder(ups []bus.RefUpdate, order map[string]int) {
	for i := 1; i < len(ups); i++ {
		for j := i; j > 0 && order[ups[j].Ref] < order[ups[j-1].Ref]; j-- {
			ups[j], ups[j-1] = ups[j-1], ups[j]
		}
	}
}

// currentValues returns the object id each existing ref points at, with one
// git for-each-ref (exact names only: for-each-ref matches prefixes too).
func (r *Repo) currentValues(ctx context.Context, refs []string) (map[string]string, error) {
	want := make(map[string]bool, len(refs))
	for _, ref := range refs {
		want[ref] = true
	}
	out, err := r.run(ctx, nil, append([]string{"for-each-ref", "--format=%(objectname) %(refname)"}, refs...)...)
	if err != nil {
		return nil, fmt.Errorf("read refs: %w", err)
	}
	cur := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		id, ref, ok := strings.Cut(line, " ")
		if ok && want[ref] {
			cur[ref] = id
		}
	}
	return cur, nil
}

// withTxnState runs f on the records under an exclusive lock and saves them.
func (r *Repo) withTxnState(ctx context.Context, f func(map[string]txnRecord)) error {
	path := filepath.Join(r.GitDir, txnStateName)
	lf, err := os.OpenFile(path+".lock-refcast", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("transaction state: %w", err)
	}
	defer lf.Close()
	for {
		err := flock.TryLock(lf)
		if err == nil {
			break
		}
		if !errors.Is(err, flock.ErrWouldBlock) {
			return fmt.Errorf("transaction state: lock: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("transaction state: %w", ctx.Err())
		case <-time.After(lockPoll):
		}
	}
	defer func() { _ = flock.Unlock(lf) }() // the deferred Close releases it too

	st := map[string]txnRecord{}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("transaction state: %w", err)
	}
	if len(data) > 0 && json.Unmarshal(data, &st) != nil {
		st = map[string]txnRecord{} // corrupt: start over; records are short-lived
	}
	f(st)
	for ref, rec := range st {
		if time.Since(rec.At) > txnRecordTTL {
			delete(st, ref)
		}
	}
	if len(st) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("transaction state: %w", err)
		}
		return nil
	}
	data, err = json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp-refcast"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("transaction state: %w", err)
	}
	return os.Rename(tmp, path)
}
