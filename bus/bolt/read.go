package bolt

import (
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/refcast/refcast/bus"
)

// Heads implements bus.Bus. It reads memory only: the heads as of the last
// acknowledged publish.
func (b *Bus) Heads(ctx context.Context) (bus.Heads, error) {
	s, err := b.state()
	return s.heads, err
}

// History implements bus.Bus.
func (b *Bus) History(ctx context.Context, pi int, epoch, after uint64, limit int) ([]bus.Event, error) {
	s, err := b.state()
	if err != nil {
		return nil, err
	}
	if pi < 0 || pi >= len(s.heads) {
		return nil, fmt.Errorf("%w: partition %d out of range", bus.ErrInvalid, pi)
	}
	return b.events(ctx, "read history", s, pi, epoch, after, limit)
}

// events returns up to limit events of partition pi after a Seq, from the
// file and then the tail, no further than s's head. ErrTruncated if the
// epoch is not the head's or the events after `after` are gone.
func (b *Bus) events(ctx context.Context, what string, s state, pi int, epoch, after uint64, limit int) ([]bus.Event, error) {
	h := s.heads[pi]
	if epoch != h.Epoch || after+1 < h.First {
		return nil, bus.ErrTruncated
	}
	if after >= h.Last || limit <= 0 {
		return nil, nil
	}
	n := min(h.Last-after, uint64(limit))
	var out []bus.Event
	if inFile := min(s.applied[pi], h.Last); after < inFile {
		err := b.view(ctx, what, func(tx *bolt.Tx) error {
			var err error
			out, err = readEvents(tx, pi, after, min(inFile-after, n))
			return err
		})
		if err != nil {
			return nil, err
		}
		if len(out) == 0 {
			// Trimmed by a flush after s was taken.
			return nil, bus.ErrTruncated
		}
		after = out[len(out)-1].Seq
	}
	for _, e := range s.tail {
		if uint64(len(out)) == n {
			break
		}
		if e.pi != pi || e.last() <= after {
			continue
		}
		for _, ev := range e.evs {
			if ev.Seq > after && uint64(len(out)) < n {
				out = append(out, ev)
			}
		}
	}
	return out, nil
}

// readEvents returns up to n events of the file's partition pi after a
// Seq, stopping at a gap (events trimmed since the caller's watermark).
func readEvents(tx *bolt.Tx, pi int, after, n uint64) ([]bus.Event, error) {
	part, err := openPartition(tx, pi)
	if err != nil {
		return nil, err
	}
	out := make([]bus.Event, 0, n)
	c := part.events.Cursor()
	want := after + 1
	for k, v := c.Seek(u64(want)); k != nil && uint64(len(out)) < n; k, v = c.Next() {
		e, err := decodeEvent(pi, k, v)
		if err != nil {
			return nil, err
		}
		if e.Seq != want {
			break
		}
		out = append(out, e)
		want++
	}
	return out, nil
}

// Refs implements bus.Bus. The state is the file's with the tail's pushes
// to the repo applied over it, as of the head it is current at.
func (b *Bus) Refs(ctx context.Context, repo string) (bus.RefState, error) {
	if err := bus.ValidateRepo(repo); err != nil {
		return bus.RefState{}, err
	}
	pi := bus.PartitionOf(repo, b.opts.Partitions)
	for {
		s, err := b.state()
		if err != nil {
			return bus.RefState{}, err
		}
		st := bus.RefState{Repo: repo, Refs: map[string]string{}, Partition: pi}
		fields := map[string]string{}
		var inFile uint64
		ahead := false
		err = b.view(ctx, "read refs", func(tx *bolt.Tx) error {
			var err error
			inFile, ahead, err = readState(tx, pi, s.heads[pi], repo, st.Refs, fields)
			return err
		})
		if err != nil {
			return bus.RefState{}, err
		}
		if !ahead {
			overlay(s.tail, inFile, repo, st.Refs, fields)
			st.SetGitFields(fields)
			h := s.heads[pi]
			st.Epoch, st.Seq, st.Chain = h.Epoch, h.Last, h.Chain
			return st, nil
		}
		if err := s.waitNewer(ctx); err != nil {
			return bus.RefState{}, err
		}
	}
}

// readState reads repo's stored refs and git fields into refs and fields,
// and returns the last Seq of the partition the file holds, unless the file
// is ahead of the watermark h (a batch committed to the file whose Publish
// has not returned yet): then ahead is true and the caller takes a newer
// watermark.
func readState(tx *bolt.Tx, pi int, h bus.PartitionHead, repo string, refs, fields map[string]string) (inFile uint64, ahead bool, err error) {
	part, err := openPartition(tx, pi)
	if err != nil {
		return 0, false, err
	}
	if part.head.Last > h.Last {
		return 0, true, nil
	}
	rb := part.refs.Bucket([]byte(repo))
	if rb == nil {
		return part.head.Last, false, nil
	}
	return part.head.Last, false, rb.ForEach(func(k, v []byte) error {
		if bus.IsGitField(string(k)) {
			fields[string(k)] = string(v)
		} else {
			refs[string(k)] = string(v)
		}
		return nil
	})
}

// overlay applies the tail's pushes to repo that the file does not hold
// (past inFile, the file's last Seq of the repo's partition: a flush may
// have written the tail after the caller took it) over its refs and git
// fields, as applyState does to the file. Applying a push twice would not
// be harmless: a repo whose refs all went loses its HEAD, which a second
// pass over a state that never empties keeps.
func overlay(tail []*entry, inFile uint64, repo string, refs, fields map[string]string) {
	for _, e := range tail {
		p := e.p
		if p.Repo != repo || e.first <= inFile {
			continue
		}
		p.ApplyTo(refs, fields)
	}
}

// inTail reports whether the tail has a push to repo.
func inTail(tail []*entry, repo string) bool {
	for _, e := range tail {
		if e.p.Repo == repo {
			return true
		}
	}
	return false
}

// Repos implements bus.Bus.
func (b *Bus) Repos(ctx context.Context) ([]string, error) {
	for {
		s, err := b.state()
		if err != nil {
			return nil, err
		}
		var out []string
		ahead := false
		err = b.view(ctx, "list repos", func(tx *bolt.Tx) error {
			stored := map[string]bool{}
			for pi := range b.opts.Partitions {
				part, err := openPartition(tx, pi)
				if err != nil {
					return err
				}
				if part.head.Last > s.heads[pi].Last {
					ahead = true
					return nil
				}
				if err := part.refs.ForEachBucket(func(k []byte) error {
					stored[string(k)] = true
					return nil
				}); err != nil {
					return err
				}
			}
			// A repo the tail pushed to has a state if its refs, with the
			// tail's pushes over them, are not empty.
			done := map[string]bool{}
			for _, e := range s.tail {
				repo := e.p.Repo
				if done[repo] {
					continue
				}
				done[repo] = true
				pi := bus.PartitionOf(repo, b.opts.Partitions)
				refs, fields := map[string]string{}, map[string]string{}
				inFile, _, err := readState(tx, pi, s.heads[pi], repo, refs, fields)
				if err != nil {
					return err
				}
				overlay(s.tail, inFile, repo, refs, fields)
				stored[repo] = len(refs) > 0
			}
			for repo, ok := range stored {
				if ok {
					out = append(out, repo)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if !ahead {
			slices.Sort(out)
			return out, nil
		}
		if err := s.waitNewer(ctx); err != nil {
			return nil, err
		}
	}
}
