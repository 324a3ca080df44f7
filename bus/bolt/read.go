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
	h, _, err := b.snapshot()
	return h, err
}

// History implements bus.Bus.
func (b *Bus) History(ctx context.Context, pi int, epoch, after uint64, limit int) ([]bus.Event, error) {
	heads, _, err := b.snapshot()
	if err != nil {
		return nil, err
	}
	if pi < 0 || pi >= len(heads) {
		return nil, fmt.Errorf("%w: partition %d out of range", bus.ErrInvalid, pi)
	}
	var out []bus.Event
	err = b.view(ctx, "read history", func(tx *bolt.Tx) error {
		var err error
		out, err = readEvents(tx, pi, heads[pi], epoch, after, limit)
		return err
	})
	return out, err
}

// readEvents returns up to limit events after a Seq, no further than the
// watermark head h. ErrTruncated if the epoch is not h's or the events
// after `after` are gone.
func readEvents(tx *bolt.Tx, pi int, h bus.PartitionHead, epoch, after uint64, limit int) ([]bus.Event, error) {
	if epoch != h.Epoch || after+1 < h.First {
		return nil, bus.ErrTruncated
	}
	if after >= h.Last || limit <= 0 {
		return nil, nil
	}
	n := min(h.Last-after, uint64(limit))
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
	if len(out) == 0 {
		// Trimmed by a publish committed after the watermark was read.
		return nil, bus.ErrTruncated
	}
	return out, nil
}

// Refs implements bus.Bus. The state is read with the head it is current
// at, in one transaction; a commit whose Publish has not returned yet is
// waited for rather than shown.
func (b *Bus) Refs(ctx context.Context, repo string) (bus.RefState, error) {
	if err := bus.ValidateRepo(repo); err != nil {
		return bus.RefState{}, err
	}
	pi := bus.PartitionOf(repo, b.opts.Partitions)
	for {
		heads, wake, err := b.snapshot()
		if err != nil {
			return bus.RefState{}, err
		}
		st := bus.RefState{Repo: repo, Refs: map[string]string{}, Partition: pi}
		err = b.view(ctx, "read refs", func(tx *bolt.Tx) error {
			part, err := openPartition(tx, pi)
			if err != nil {
				return err
			}
			st.Epoch, st.Seq, st.Chain = part.head.Epoch, part.head.Last, part.head.Chain
			rb := part.refs.Bucket([]byte(repo))
			if rb == nil {
				return nil
			}
			fields := map[string]string{}
			err = rb.ForEach(func(k, v []byte) error {
				if bus.IsGitField(string(k)) {
					fields[string(k)] = string(v)
				} else {
					st.Refs[string(k)] = string(v)
				}
				return nil
			})
			st.SetGitFields(fields)
			return err
		})
		if err != nil {
			return bus.RefState{}, err
		}
		if st.Seq <= heads[pi].Last {
			return st, nil
		}
		select { // a publish is between its commit and its return
		case <-wake:
		case <-ctx.Done():
			return bus.RefState{}, ctx.Err()
		}
	}
}

// Repos implements bus.Bus.
func (b *Bus) Repos(ctx context.Context) ([]string, error) {
	if _, _, err := b.snapshot(); err != nil {
		return nil, err
	}
	var out []string
	err := b.view(ctx, "list repos", func(tx *bolt.Tx) error {
		for pi := range b.opts.Partitions {
			part, err := openPartition(tx, pi)
			if err != nil {
				return err
			}
			if err := part.refs.ForEachBucket(func(k []byte) error {
				out = append(out, string(k))
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}
