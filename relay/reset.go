package relay

import (
	"context"
	"sort"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

// HandleReset turns a reset (the node could not replay what the relay
// missed) into updates: one per ref of the snapshot whose id differs from
// the last the relay handled for it (in this process, or delivered before
// a restart, as Resume was told), and a delete for each ref remembered
// that the snapshot no longer has, each marked Reset. A ref the relay does
// not remember (none handled, a state file without refs, past MaxRefs) is
// sent whatever its id: receivers treat a webhook as "look again", so an
// extra one is harmless, a skipped one is not. The snapshot's cursor
// becomes safe once they are delivered.
func (r *Relay) HandleReset(ctx context.Context, rs wire.Reset) error {
	for _, rr := range rs.Repos {
		r.mu.Lock()
		known := r.known.repo(rr.Repo)
		var ups []Update
		for ref, id := range rr.Refs {
			old, ok := known[ref]
			if ok && old == id {
				continue
			}
			if !ok {
				old = bus.ZeroSHA1
			}
			ups = append(ups, resetUpdate(rs.Cursor, rr.Repo, ref, old, id))
		}
		for ref, id := range known {
			if _, ok := rr.Refs[ref]; !ok {
				ups = append(ups, resetUpdate(rs.Cursor, rr.Repo, ref, id, bus.ZeroSHA1))
			}
		}
		r.mu.Unlock()
		sort.Slice(ups, func(i, j int) bool { return ups[i].Event.Ref < ups[j].Event.Ref })
		for _, u := range ups {
			u.Cursor = "" // only the last update carries the snapshot's cursor
			if err := r.Handle(ctx, u); err != nil {
				return err
			}
		}
	}
	return r.Handle(ctx, Update{Cursor: rs.Cursor})
}

func resetUpdate(cursor, repo, ref, old, new string) Update {
	return Update{Cursor: cursor, Reset: true, Event: bus.Event{
		V: bus.SchemaVersion, Repo: repo, Ref: ref, Old: old, New: new,
		Kind: bus.KindOf(old, new), Source: "reset",
		// The delivery id is derived from the push id: the reset's cursor
		// stands in for one, the same after a restart that gets the same
		// reset.
		PushID: "reset:" + cursor,
	}}
}
