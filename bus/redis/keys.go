package redis

import (
	"fmt"
	"math/rand/v2"
	"strconv"
)

// partKeys are the keys of one partition. They share the hash tag {pN}, so
// on a Cluster they live in one slot and one script can touch them all.
//
//	<prefix>:{pN}:stream        stream of events; entry id "<seq>-0",
//	                            fields e (event JSON), p (epoch), t (publish ms),
//	                            v (push id of the entry before),
//	                            c (chain of the history before this entry, hex)
//	<prefix>:{pN}:seq           last seq handed out (string integer)
//	<prefix>:{pN}:tip           push id of the last entry
//	<prefix>:{pN}:chain         "<seq>:<hex>": the chain of the history up to seq
//	<prefix>:{pN}:epoch         epoch of this life of the history (decimal uint64 < 2^63)
//	<prefix>:{pN}:repos         set of repos of the partition that have ref state
//	<prefix>:{pN}:state:<repo>  hash ref -> object id
//	<prefix>:{pN}:git:<repo>    hash of git fields (bus.GitFields), while state:<repo> exists
//	<prefix>:{pN}:push:<id>     first seq of an already published push (expires after PushTTL)
type partKeys struct {
	stream, seq, epoch, tip, chain, repos string
	base                                  string // "<prefix>:{pN}:"
}

// head are the keys every script starts with (see ensureEpoch).
func (k partKeys) head() []string { return []string{k.stream, k.seq, k.epoch, k.tip, k.chain} }

func newPartKeys(prefix string, p int) partKeys {
	base := fmt.Sprintf("%s:{p%d}:", prefix, p)
	return partKeys{
		stream: base + "stream",
		seq:    base + "seq",
		epoch:  base + "epoch",
		tip:    base + "tip",
		chain:  base + "chain",
		repos:  base + "repos",
		base:   base,
	}
}

// state is the ref state key of a repo; repo must have passed
// bus.ValidateRepo (its charset needs no escaping in a key).
func (k partKeys) state(repo string) string { return k.base + "state:" + repo }

// git is the hash of a repo's reserved git fields (bus.GitFields: HEAD,
// peels), kept beside its state hash so that hash holds refs alone and its
// existence still means "has refs".
func (k partKeys) git(repo string) string { return k.base + "git:" + repo }

// push is the idempotency key of a push id; id must have passed
// bus.ValidatePushID.
func (k partKeys) push(id string) string { return k.base + "push:" + id }

// newEpoch returns a random epoch in [1, 2^63) as the decimal string the
// scripts store: 63 bits stay exact in JSON, and Lua never does arithmetic
// on them.
func newEpoch() string { return strconv.FormatUint(rand.Uint64N(1<<63-1)+1, 10) }

// seqOf parses the seq out of a stream entry id "<seq>-0".
func seqOf(id string) (uint64, error) {
	for i := 0; i < len(id); i++ {
		if id[i] == '-' {
			id = id[:i]
			break
		}
	}
	return strconv.ParseUint(id, 10, 64)
}
