package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/refcast/refcast/bus"
)

// Publish implements bus.Bus: one script call appends the push's events to
// its partition's stream with the next dense seqs, updates the repo's ref
// state and remembers the push id, all or nothing. Invalid pushes fail with
// bus.ErrInvalid before Redis is touched; an unreachable Redis gives
// bus.ErrUnavailable, after which retrying the same push is safe.
func (b *Bus) Publish(ctx context.Context, p *bus.Push) ([]bus.Event, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, bus.ErrClosed
	}
	if err := b.checkMeta(ctx); err != nil {
		return nil, err
	}
	pi := bus.PartitionOf(p.Repo, len(b.parts))
	k := b.parts[pi]
	evs := p.Events()

	now := time.Now()
	cutoff := int64(0)
	if b.opts.MaxAge > 0 {
		cutoff = now.Add(-b.opts.MaxAge).UnixMilli()
	}
	replace := "0"
	if p.ReplacesState() {
		replace = "1"
	}
	fields := p.GitFields()
	args := make([]any, 0, 9+2*(len(p.Updates)+len(fields))+len(evs))
	args = append(args, newEpoch(), b.opts.PushTTL.Milliseconds(), b.opts.History, cutoff, now.UnixMilli(), replace, p.Repo, p.ID, len(p.Updates)+len(fields))
	for _, u := range p.Updates {
		newID := u.New
		if !p.Seed && bus.IsZeroID(u.New) {
			newID = ""
		}
		args = append(args, u.Ref, newID)
	}
	for _, f := range fields {
		args = append(args, f[0], f[1])
	}
	for i := range evs {
		data, err := json.Marshal(&evs[i])
		if err != nil {
			return nil, fmt.Errorf("redis bus: encode event: %w", err)
		}
		args = append(args, data)
	}
	keys := append(k.head(), k.state(p.Repo), k.repos, k.push(p.ID), k.git(p.Repo))

	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	res, err := publishScript.Run(ctx, b.rdb, keys, args...).Slice()
	if err != nil {
		return nil, b.wrap("publish "+p.Repo, err)
	}
	if len(res) != 3 {
		return nil, fmt.Errorf("redis bus: publish %s: unexpected script reply %v", p.Repo, res)
	}
	s, _ := res[0].(string)
	first, err := strconv.ParseUint(s, 10, 64)
	if err != nil || first == 0 {
		return nil, fmt.Errorf("redis bus: publish %s: bad first seq %q in script reply", p.Repo, s)
	}
	for i := range evs {
		evs[i].Partition, evs[i].Seq = pi, first+uint64(i)
	}
	return evs, nil
}
