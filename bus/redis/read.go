package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/bus"
)

// Heads implements bus.Bus: one pipeline of one small script per partition.
// A partition nobody has written yet gets its epoch here, so a subscriber
// starting from these heads is not reset by the first publish.
func (b *Bus) Heads(ctx context.Context) (bus.Heads, error) {
	if b.isClosed() {
		return nil, bus.ErrClosed
	}
	if err := b.checkMeta(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	cmds, err := b.headsPipelined(ctx)
	if err != nil {
		return nil, b.wrap("heads", err)
	}
	heads := make(bus.Heads, len(b.parts))
	for i, c := range cmds {
		h, _, err := parseHead(c)
		if err != nil {
			return nil, fmt.Errorf("redis bus: heads: partition %d: %w", i, err)
		}
		heads[i] = h
	}
	return heads, nil
}

func (b *Bus) headsPipelined(ctx context.Context) ([]*goredis.Cmd, error) {
	run := func(sha bool) ([]*goredis.Cmd, error) {
		pipe := b.rdb.Pipeline()
		cmds := make([]*goredis.Cmd, len(b.parts))
		for i, k := range b.parts {
			keys := k.head()
			if sha {
				cmds[i] = headScript.EvalSha(ctx, pipe, keys, newEpoch(), "0")
			} else {
				cmds[i] = headScript.Eval(ctx, pipe, keys, newEpoch(), "0")
			}
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run(true)
	if err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
		cmds, err = run(false) // EVAL loads it for the next time
	}
	if err == nil {
		for _, c := range cmds {
			if c.Err() != nil {
				return nil, c.Err()
			}
		}
	}
	return cmds, err
}

// probed is the entry at a seq a head read asked about: its event (ok
// false when that entry is gone) with Prev and Chain.
type probed struct {
	ev  bus.Event
	ok  bool
	bad bool // the entry is there but does not decode
}

// head runs headScript for one partition; probe, when non-zero, is a seq
// whose entry is returned too.
func (b *Bus) head(ctx context.Context, pi int, probe uint64) (bus.PartitionHead, probed, error) {
	if err := b.checkMeta(ctx); err != nil {
		return bus.PartitionHead{}, probed{}, err
	}
	k := b.parts[pi]
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	c := headScript.Run(ctx, b.rdb, k.head(), newEpoch(), strconv.FormatUint(probe, 10))
	if c.Err() != nil {
		return bus.PartitionHead{}, probed{}, c.Err()
	}
	h, s, err := parseHead(c)
	if err != nil || probe == 0 || s[3] == "" {
		return h, probed{}, err
	}
	ev, err := decodeEvent(pi, strconv.FormatUint(probe, 10)+"-0", s[3], s[4])
	if err != nil {
		return h, probed{ok: true, bad: true}, nil
	}
	return h, probed{ev: ev, ok: true}, nil
}

// parseHead parses headScript's reply, returned too for the probe.
func parseHead(c *goredis.Cmd) (bus.PartitionHead, []string, error) {
	s, err := c.StringSlice()
	if err != nil || len(s) != 6 {
		return bus.PartitionHead{}, nil, fmt.Errorf("unexpected head reply %v: %w", c.Val(), err)
	}
	var h bus.PartitionHead
	if h.Epoch, err = strconv.ParseUint(s[0], 10, 64); err != nil {
		return h, nil, fmt.Errorf("bad epoch %q: %w", s[0], err)
	}
	if h.Last, err = strconv.ParseUint(s[1], 10, 64); err != nil {
		return h, nil, fmt.Errorf("bad seq %q: %w", s[1], err)
	}
	h.First = h.Last + 1
	if s[2] != "" {
		if h.First, err = seqOf(s[2]); err != nil {
			return h, nil, fmt.Errorf("bad stream id %q: %w", s[2], err)
		}
	}
	h.Chain = bus.ParseChainHex(s[5])
	return h, s, nil
}

// maxAfter keeps positions within what Lua numbers hold exactly; no
// partition gets anywhere near 2^52 events.
const maxAfter = 1 << 52

// History implements bus.Bus, in one script so the epoch check, the range
// check and the read see the same state.
func (b *Bus) History(ctx context.Context, pi int, epoch, after uint64, limit int) ([]bus.Event, error) {
	if b.isClosed() {
		return nil, bus.ErrClosed
	}
	if err := b.checkMeta(ctx); err != nil {
		return nil, err
	}
	if pi < 0 || pi >= len(b.parts) {
		return nil, fmt.Errorf("%w: partition %d out of range", bus.ErrInvalid, pi)
	}
	if limit <= 0 {
		return nil, nil
	}
	after = min(after, maxAfter)
	k := b.parts[pi]
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	res, err := historyScript.Run(ctx, b.rdb, k.head(),
		newEpoch(), strconv.FormatUint(epoch, 10), strconv.FormatUint(after+1, 10), limit).StringSlice()
	if err != nil {
		return nil, b.wrap(fmt.Sprintf("history of partition %d", pi), err)
	}
	if len(res) == 0 || res[0] != "ok" {
		return nil, bus.ErrTruncated
	}
	res = res[1:]
	if len(res)%3 != 0 {
		return nil, fmt.Errorf("redis bus: history of partition %d: reply not in triples", pi)
	}
	out := make([]bus.Event, 0, len(res)/3)
	for i := 0; i < len(res); i += 3 {
		ev, err := decodeEvent(pi, res[i], res[i+1], res[i+2])
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// decodeEvent decodes a stream entry: its id, its e field and its c field
// ("?" when it has none: written by a version without chains, so Prev and
// Chain are unknown).
func decodeEvent(pi int, id, data, chain string) (bus.Event, error) {
	var ev bus.Event
	seq, err := seqOf(id)
	if err != nil {
		return ev, fmt.Errorf("redis bus: partition %d: bad stream id %q", pi, id)
	}
	if err := json.Unmarshal([]byte(data), &ev); err != nil {
		return ev, fmt.Errorf("redis bus: partition %d: decode event %d: %w", pi, seq, err)
	}
	ev.Partition, ev.Seq = pi, seq
	if chain != "?" {
		ev.Prev = bus.ParseChainHex(chain)
		ev.Chain = bus.ChainNext(ev.Prev, ev.PushID)
	}
	return ev, nil
}

// Refs implements bus.Bus: the state hash and the partition's position are
// read by one script, so Seq is exactly the position the refs are current at.
func (b *Bus) Refs(ctx context.Context, repo string) (bus.RefState, error) {
	if err := bus.ValidateRepo(repo); err != nil {
		return bus.RefState{}, err
	}
	if b.isClosed() {
		return bus.RefState{}, bus.ErrClosed
	}
	if err := b.checkMeta(ctx); err != nil {
		return bus.RefState{}, err
	}
	pi := bus.PartitionOf(repo, len(b.parts))
	k := b.parts[pi]
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	res, err := refsScript.Run(ctx, b.rdb, append(k.head(), k.state(repo), k.git(repo)), newEpoch()).Slice()
	if err != nil {
		return bus.RefState{}, b.wrap("refs of "+repo, err)
	}
	bad := func() (bus.RefState, error) {
		return bus.RefState{}, fmt.Errorf("redis bus: refs of %s: unexpected script reply", repo)
	}
	if len(res) != 5 {
		return bad()
	}
	es, _ := res[0].(string)
	ls, _ := res[1].(string)
	flat, _ := res[2].([]any)
	cs, _ := res[3].(string)
	st := bus.RefState{Repo: repo, Partition: pi, Refs: make(map[string]string, len(flat)/2)}
	if st.Epoch, err = strconv.ParseUint(es, 10, 64); err != nil {
		return bad()
	}
	if st.Seq, err = strconv.ParseUint(ls, 10, 64); err != nil {
		return bad()
	}
	st.Chain = bus.ParseChainHex(cs)
	for i := 0; i+1 < len(flat); i += 2 {
		ref, _ := flat[i].(string)
		id, _ := flat[i+1].(string)
		st.Refs[ref] = id
	}
	gflat, _ := res[4].([]any)
	fields := make(map[string]string, len(gflat)/2)
	for i := 0; i+1 < len(gflat); i += 2 {
		f, _ := gflat[i].(string)
		v, _ := gflat[i+1].(string)
		fields[f] = v
	}
	st.SetGitFields(fields)
	return st, nil
}

// Repos implements bus.Bus: SMEMBERS of every partition, pipelined.
func (b *Bus) Repos(ctx context.Context) ([]string, error) {
	if b.isClosed() {
		return nil, bus.ErrClosed
	}
	if err := b.checkMeta(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	cmds := make([]*goredis.StringSliceCmd, len(b.parts))
	for i, k := range b.parts {
		cmds[i] = pipe.SMembers(ctx, k.repos)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, b.wrap("repos", err)
	}
	var out []string
	for _, c := range cmds {
		out = append(out, c.Val()...)
	}
	slices.Sort(out)
	return out, nil
}
