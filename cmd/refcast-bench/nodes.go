package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// node is one server the streams are spread over. With several (-url
// URL1,URL2,...) they must share a bus: events are published to the first
// only, and every node's streams must receive them.
type node struct {
	url   string // base URL without a trailing slash; set at parse
	host  string // host:port: what workers dial and send as Host
	pid   int    // 0: its resources are not sampled
	pprof string // "": its goroutines are not counted
}

// maxNodes bounds -url: every worker keeps per-event counters for each
// node, and a rate trial has 200,000 event slots × 16 B each, so 16 nodes
// cost a worker 51 MB. A tier measured on one machine needs far fewer.
const maxNodes = 16

// parseNodes builds the nodes from -url, -pid and -pprof, each a
// comma-separated list in the same order. -pid and -pprof may be empty (or
// -pid "0") to measure no resources or goroutines; otherwise they name one
// entry per URL.
func parseNodes(urls, pids, pprofs string) ([]node, error) {
	us, err := splitList("-url", urls)
	if err != nil {
		return nil, err
	}
	if len(us) == 0 {
		return nil, fmt.Errorf("-url: no URL given")
	}
	if len(us) > maxNodes {
		return nil, fmt.Errorf("-url: %d URLs, at most %d", len(us), maxNodes)
	}
	nodes := make([]node, len(us))
	seen := make(map[string]int, len(us))
	for i, raw := range us {
		host, err := parseNodeURL(raw)
		if err != nil {
			return nil, fmt.Errorf("-url entry %d: %w", i+1, err)
		}
		if j, dup := seen[host]; dup {
			return nil, fmt.Errorf("-url: entries %d and %d are both %s: each node once", j+1, i+1, host)
		}
		seen[host] = i
		nodes[i] = node{url: strings.TrimRight(raw, "/"), host: host}
	}
	if pids != "" && pids != "0" {
		ps, err := parseIDs("-pid", pids)
		if err != nil {
			return nil, err
		}
		if len(ps) != len(nodes) {
			return nil, fmt.Errorf("-pid: %d process ids for %d URLs: give one per -url entry, in the same order", len(ps), len(nodes))
		}
		for i, p := range ps {
			nodes[i].pid = p
		}
	}
	if pprofs != "" {
		ps, err := splitList("-pprof", pprofs)
		if err != nil {
			return nil, err
		}
		if len(ps) != len(nodes) {
			return nil, fmt.Errorf("-pprof: %d URLs for %d -url entries: give one per node, in the same order", len(ps), len(nodes))
		}
		for i, p := range ps {
			if err := checkLoopback(p); err != nil {
				return nil, fmt.Errorf("-pprof entry %d: %w", i+1, err)
			}
			nodes[i].pprof = strings.TrimRight(p, "/")
		}
	}
	return nodes, nil
}

// parseNodeURL checks one -url entry and returns its host:port. Workers
// speak plain HTTP/1.1 over their own TCP connections, so the URL must be
// http:// with an explicit loopback address and port and no path.
func parseNodeURL(raw string) (string, error) {
	if err := checkLoopback(raw); err != nil {
		return "", err
	}
	u, _ := url.Parse(raw) // checkLoopback parsed it
	if u.Scheme != "http" {
		return "", fmt.Errorf("%q: the scheme must be http (workers speak plain HTTP/1.1)", raw)
	}
	if u.Port() == "" {
		return "", fmt.Errorf("%q: no port", raw)
	}
	if p := strings.TrimRight(u.Path, "/"); p != "" || u.RawQuery != "" {
		return "", fmt.Errorf("%q: a base URL has no path or query", raw)
	}
	return u.Host, nil
}

// parseIDs reads a comma-separated list of process ids.
func parseIDs(name, s string) ([]int, error) {
	fs, err := splitList(name, s)
	if err != nil || len(fs) == 0 {
		return nil, err
	}
	out := make([]int, len(fs))
	for i, f := range fs {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s entry %d: %q is not a process id", name, i+1, f)
		}
		out[i] = n
	}
	return out, nil
}

// splitList splits a comma-separated flag value; an empty value is an
// empty list, an empty entry ("a,,b", "a,") an error.
func splitList(name, s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	fs := strings.Split(s, ",")
	for i, f := range fs {
		fs[i] = strings.TrimSpace(f)
		if fs[i] == "" {
			return nil, fmt.Errorf("%s: entry %d of %q is empty", name, i+1, s)
		}
	}
	return fs, nil
}

// usage is every sampled process at one moment: each node's process tree
// and the Redis servers' trees summed.
type usage struct {
	nodes   []procSample
	ok      []bool // per node: sampled
	redis   procSample
	redisOK bool
}

// all reports whether every node was sampled, and their sum.
func (u usage) all() (procSample, bool) {
	var s procSample
	for i, n := range u.nodes {
		if !u.ok[i] {
			return procSample{}, false
		}
		s.pids += n.pids
		s.rssKB += n.rssKB
		s.pssKB += n.pssKB
		s.cpu += n.cpu
	}
	return s, len(u.nodes) > 0
}

// cpuDelta is node k's CPU time between two samples (k < 0: all nodes).
func cpuDelta(a, b usage, k int) (time.Duration, bool) {
	if k < 0 {
		sa, ok1 := a.all()
		sb, ok2 := b.all()
		return sb.cpu - sa.cpu, ok1 && ok2
	}
	return b.nodes[k].cpu - a.nodes[k].cpu, a.ok[k] && b.ok[k]
}

// plan says which streams each node holds: stream g (0 <= g < conns) is
// on node g % nodes and subscribes to repo g % repos, so the nodes hold
// counts differing by at most one, and when repos and nodes are coprime
// (1,000 repos over 3 nodes) every repo's subscribers are spread over all
// nodes too.
type plan struct {
	nodes    int
	assigned []int     // per node: streams assigned to it
	subs     [][]int64 // [repo][node]: streams of repo on node
}

func newPlan(conns, repos, nodes int) plan {
	repos, nodes = max(1, repos), max(1, nodes)
	p := plan{nodes: nodes, assigned: make([]int, nodes), subs: make([][]int64, repos)}
	for r := range p.subs {
		p.subs[r] = make([]int64, nodes)
	}
	for g := range conns {
		p.assigned[g%nodes]++
		p.subs[g%repos][g%nodes]++
	}
	return p
}

// expected is how many of node k's open streams an event on repo r should
// reach. When some of the node's streams never opened it scales the
// assignment down, and the figure is exact only if every stream of the
// node is on r.
func (p plan) expected(r, k int, open []int) (n int64, exact bool) {
	n = p.subs[r][k]
	switch {
	case open[k] >= p.assigned[k]:
		return n, true
	case n == int64(p.assigned[k]):
		return int64(open[k]), true
	default:
		return n * int64(open[k]) / int64(p.assigned[k]), false
	}
}

// want is the deliveries an event on repo r should make on all nodes.
func (p plan) want(r int, open []int) int64 {
	var n int64
	for k := range p.nodes {
		e, _ := p.expected(r, k, open)
		n += e
	}
	return n
}

// tally is the figures of a set of events, per node and for all nodes.
type tally struct {
	delivered, expected []int64           // per node
	incomplete          []int             // per node
	lat                 [][]time.Duration // per node, -1: incomplete
	all                 struct {
		delivered, expected int64
		incomplete          int
		lat                 []time.Duration // latest over the nodes, -1: incomplete anywhere
	}
}

// tally counts events [from, to): per is the merged worker stats with
// per-event detail, open the streams open per node, repoOf the repo of
// event seq, published whether it was published (only published events
// are expected; deliveries of the others are counted, as a publish that
// failed late may still have been delivered).
func (p plan) tally(per []nodeStats, from, to int, open []int, repoOf func(seq int) int, published func(seq int) bool) tally {
	var t tally
	t.delivered = make([]int64, p.nodes)
	t.expected = make([]int64, p.nodes)
	t.incomplete = make([]int, p.nodes)
	t.lat = make([][]time.Duration, p.nodes)
	at := func(xs []int64, i int) int64 {
		if i < len(xs) {
			return xs[i]
		}
		return 0
	}
	for seq := from; seq < to; seq++ {
		for k := range p.nodes {
			t.delivered[k] += at(per[k].Counts, seq)
		}
		if !published(seq) {
			continue
		}
		r := repoOf(seq)
		var latest time.Duration
		involved, incomplete := false, false
		for k := range p.nodes {
			want, exact := p.expected(r, k, open)
			got := at(per[k].Counts, seq)
			t.expected[k] += want
			if want == 0 {
				continue // none of this node's streams is on r
			}
			involved = true
			if got < want && exact {
				t.incomplete[k]++
				t.lat[k] = append(t.lat[k], -1)
				incomplete = true
				continue
			}
			l := time.Duration(at(per[k].MaxLat, seq))
			t.lat[k] = append(t.lat[k], l)
			latest = max(latest, l)
		}
		if !involved {
			continue
		}
		if incomplete {
			t.all.incomplete++
			latest = -1
		}
		t.all.lat = append(t.all.lat, latest)
	}
	for k := range p.nodes {
		t.all.delivered += t.delivered[k]
		t.all.expected += t.expected[k]
	}
	return t
}
