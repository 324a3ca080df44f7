package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// workerEnv marks a process as a worker: the coordinator re-executes
// itself with it set, and talks to the worker over stdin/stdout, one JSON
// object per line.
const workerEnv = "REFCAST_BENCH_WORKER"

// workerCmd is one request from the coordinator.
type workerCmd struct {
	Op      string       `json:"op"` // connect, reset, stats, close
	Connect *connectSpec `json:"connect,omitempty"`
	Run     int          `json:"run,omitempty"`    // reset: only events of this run count
	Events  int          `json:"events,omitempty"` // reset: per-event slots per node
	Nodes   int          `json:"nodes,omitempty"`  // reset: nodes the streams are spread over (0: 1)
	Detail  bool         `json:"detail,omitempty"` // stats: include per-event figures
	Upto    int          `json:"upto,omitempty"`   // stats with detail: events [0, Upto) only (0: all slots)
}

// connectSpec says which connections a worker holds. Connection i of the
// worker has the global index g = Start+i, is made to Servers[g % len(Servers)]
// (that server's node index) and subscribes to repo g % Repos, named by
// fmt.Sprintf(RepoFmt, repo). The coordinator's plan makes the same choice.
type connectSpec struct {
	Servers     []string      `json:"servers"`  // host:port per node, loopback; also the Host header
	LocalIP     string        `json:"local_ip"` // source address, 127.0.0.x
	Prefix      string        `json:"prefix"`   // request path up to the repo
	Suffix      string        `json:"suffix"`   // request path after the repo
	RepoFmt     string        `json:"repo_fmt"`
	Repos       int           `json:"repos"`
	Start       int           `json:"start"`
	Count       int           `json:"count"`
	Concurrency int           `json:"concurrency"`
	Timeout     time.Duration `json:"timeout"`
}

// workerStats is a worker's answer to stats and connect.
type workerStats struct {
	Nodes  []nodeStats `json:"nodes"` // one per server of the last connect
	Errors []string    `json:"errors,omitempty"`
	Err    string      `json:"err,omitempty"`
}

// nodeStats are a worker's figures for the streams of one node.
type nodeStats struct {
	Open     int     `json:"open"`
	Failed   int     `json:"failed"`   // connection attempts that failed
	Dropped  int     `json:"dropped"`  // streams the server ended
	Received int64   `json:"received"` // events of the current run
	Counts   []int64 `json:"counts,omitempty"`
	MaxLat   []int64 `json:"max_lat,omitempty"` // per event, nanoseconds
}

// runStats are the counters of one run; swapped whole on reset.
type runStats struct {
	run      int
	events   int            // slots per node
	received []atomic.Int64 // per node
	counts   []atomic.Int64 // [node*events + seq]
	maxLat   []atomic.Int64 // [node*events + seq]
}

func newRunStats(run, events, nodes int) *runStats {
	nodes = max(1, nodes)
	return &runStats{
		run: run, events: events, received: make([]atomic.Int64, nodes),
		counts: make([]atomic.Int64, nodes*events), maxLat: make([]atomic.Int64, nodes*events),
	}
}

type worker struct {
	stats atomic.Pointer[runStats]

	mu      sync.Mutex
	nodes   int        // guarded by mu; servers of the last connect (at least 1)
	slots   []net.Conn // guarded by mu; nil when not open
	slotOf  []int      // guarded by mu; node of each slot
	failed  []int      // guarded by mu; per node
	dropped []int      // guarded by mu; per node
	errs    []string   // guarded by mu; the first few
	closing bool       // guarded by mu
	wg      sync.WaitGroup
}

func runWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	raiseNoFile()
	w := &worker{nodes: 1, failed: make([]int, 1), dropped: make([]int, 1)}
	w.stats.Store(newRunStats(-1, 0, 1))
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	defer w.closeAll()
	for {
		var c workerCmd
		if err := dec.Decode(&c); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the coordinator went away
			}
			return fmt.Errorf("worker: read command: %w", err)
		}
		var st workerStats
		switch c.Op {
		case "connect":
			if c.Connect == nil {
				st.Err = "connect without spec"
				break
			}
			if n := len(c.Connect.Servers); n == 0 || n > maxNodes {
				st.Err = fmt.Sprintf("connect: %d servers, want 1..%d", n, maxNodes)
				break
			}
			if err := w.connect(ctx, c.Connect); err != nil {
				st.Err = err.Error()
				break
			}
			st = w.snapshot(false, 0)
		case "reset":
			if c.Events < 0 || c.Events > maxRateEvents || c.Nodes < 0 || c.Nodes > maxNodes {
				st.Err = fmt.Sprintf("reset: %d events on %d nodes is out of range", c.Events, c.Nodes)
				break
			}
			w.stats.Store(newRunStats(c.Run, c.Events, c.Nodes))
			st = w.snapshot(false, 0)
		case "stats":
			st = w.snapshot(c.Detail, c.Upto)
		case "close":
			w.closeAll()
			return enc.Encode(w.snapshot(false, 0))
		default:
			st.Err = "unknown op " + strconv.Quote(c.Op)
		}
		if err := enc.Encode(st); err != nil {
			return fmt.Errorf("worker: write answer: %w", err)
		}
	}
}

// raiseNoFile lifts the soft open-files limit to the hard one.
func raiseNoFile() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

// snapshot reports per node; with detail, the per-event figures of
// events [0, upto) (upto 0: every slot).
func (w *worker) snapshot(detail bool, upto int) workerStats {
	w.mu.Lock()
	st := workerStats{Nodes: make([]nodeStats, w.nodes), Errors: append([]string(nil), w.errs...)}
	for k := range st.Nodes {
		st.Nodes[k].Failed, st.Nodes[k].Dropped = w.failed[k], w.dropped[k]
	}
	for i, c := range w.slots {
		if c != nil {
			st.Nodes[w.slotOf[i]].Open++
		}
	}
	w.mu.Unlock()
	rs := w.stats.Load()
	for k := range st.Nodes {
		if k >= len(rs.received) {
			break // a reset for fewer nodes than the last connect
		}
		ns := &st.Nodes[k]
		ns.Received = rs.received[k].Load()
		if !detail {
			continue
		}
		n := rs.events
		if upto > 0 {
			n = min(n, upto)
		}
		ns.Counts, ns.MaxLat = make([]int64, n), make([]int64, n)
		for i := range n {
			ns.Counts[i] = rs.counts[k*rs.events+i].Load()
			ns.MaxLat[i] = rs.maxLat[k*rs.events+i].Load()
		}
	}
	return st
}

func (w *worker) noteErr(err error) {
	w.mu.Lock()
	if len(w.errs) < 5 {
		w.errs = append(w.errs, err.Error())
	}
	w.mu.Unlock()
}

// connect opens every slot of spec that is not open (so a second call
// replaces dropped streams), at most spec.Concurrency at a time, and returns
// when each has its response head or failed. The streams of an earlier
// connect stay on their nodes, so the number of servers may change only
// while none is open.
func (w *worker) connect(ctx context.Context, spec *connectSpec) error {
	nodes := len(spec.Servers)
	w.mu.Lock()
	if nodes != w.nodes {
		for _, c := range w.slots {
			if c != nil {
				w.mu.Unlock()
				return fmt.Errorf("connect: %d servers while streams to %d are open", nodes, w.nodes)
			}
		}
		w.nodes, w.failed, w.dropped = nodes, make([]int, nodes), make([]int, nodes)
	}
	if len(w.slots) < spec.Count {
		w.slots = append(w.slots, make([]net.Conn, spec.Count-len(w.slots))...)
		w.slotOf = append(w.slotOf, make([]int, spec.Count-len(w.slotOf))...)
	}
	for i := range spec.Count {
		if w.slots[i] == nil {
			w.slotOf[i] = (spec.Start + i) % nodes
		}
	}
	var todo []int
	for i := range spec.Count {
		if w.slots[i] == nil {
			todo = append(todo, i)
		}
	}
	w.mu.Unlock()
	local, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(spec.LocalIP, "0"))
	if err != nil {
		return fmt.Errorf("connect: source address: %w", err)
	}
	d := net.Dialer{LocalAddr: local, Timeout: spec.Timeout}
	sem := make(chan struct{}, max(1, spec.Concurrency))
	var setup sync.WaitGroup
	for _, i := range todo {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		setup.Add(1)
		g := spec.Start + i
		path := spec.Prefix + fmt.Sprintf(spec.RepoFmt, g%max(1, spec.Repos)) + spec.Suffix
		go w.open(ctx, &d, spec.Servers[g%nodes], spec.Timeout, i, g%nodes, path, func() { <-sem; setup.Done() })
	}
	setup.Wait()
	return nil
}

// open dials one stream to server (node k), reads its response head, calls
// ready, then reads frames until the stream ends.
func (w *worker) open(ctx context.Context, d *net.Dialer, server string, timeout time.Duration, slot, k int, path string, ready func()) {
	fail := func(err error) {
		w.mu.Lock()
		w.failed[k]++
		w.mu.Unlock()
		w.noteErr(err)
		ready()
	}
	conn, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		fail(err)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // no TIME_WAIT pile-up across rounds
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + server + "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		_ = conn.Close()
		fail(fmt.Errorf("write request: %w", err))
		return
	}
	br := bufio.NewReaderSize(conn, 4096)
	chunked, err := readHead(br)
	if err != nil {
		_ = conn.Close()
		fail(err)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		_ = conn.Close()
		ready()
		return
	}
	w.slots[slot] = conn
	w.wg.Add(1)
	w.mu.Unlock()
	ready()

	defer w.wg.Done()
	var r *bufio.Reader = br
	if chunked {
		r = bufio.NewReaderSize(httputil.NewChunkedReader(br), 4096)
	}
	err = w.readFrames(r, k)
	w.mu.Lock()
	w.slots[slot] = nil
	if !w.closing {
		w.dropped[k]++
		w.mu.Unlock()
		w.noteErr(fmt.Errorf("stream ended: %v", err))
	} else {
		w.mu.Unlock()
	}
	_ = conn.Close()
}

// readHead reads an HTTP/1.1 response head and reports whether the body is
// chunked. Anything but 200 is an error.
func readHead(br *bufio.Reader) (chunked bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return false, fmt.Errorf("read status: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.")) || len(line) < 12 || string(line[9:12]) != "200" {
		return false, fmt.Errorf("status %q", bytes.TrimSpace(line))
	}
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return false, fmt.Errorf("read headers: %w", err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			return chunked, nil
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Transfer-Encoding")) &&
			bytes.Contains(bytes.ToLower(v), []byte("chunked")) {
			chunked = true
		}
	}
}

// readFrames reads SSE lines of a stream on node k until the stream ends
// and records every data line that carries a bench event.
func (w *worker) readFrames(r *bufio.Reader, k int) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		if bytes.HasPrefix(line, []byte("data:")) {
			if run, seq, sent, ok := parseBenchData(line); ok {
				w.record(k, run, seq, time.Now().UnixNano()-sent)
			}
		}
		for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of a long line
			_, err = r.ReadSlice('\n')
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return err
			}
		}
	}
}

// record counts event seq of run on a stream of node k.
func (w *worker) record(k, run, seq int, lat int64) {
	rs := w.stats.Load()
	if run != rs.run || k >= len(rs.received) {
		return
	}
	rs.received[k].Add(1)
	if seq < 0 || seq >= rs.events {
		return
	}
	i := k*rs.events + seq
	rs.counts[i].Add(1)
	for {
		old := rs.maxLat[i].Load()
		if lat <= old || rs.maxLat[i].CompareAndSwap(old, lat) {
			return
		}
	}
}

// pushMarker introduces the bench push id in an event's JSON:
// "push":"b<run>-<seq>-<unix nanoseconds at publish>".
var pushMarker = []byte(`"push":"b`)

// parseBenchData extracts run, sequence and publish time from a data line.
func parseBenchData(line []byte) (run, seq int, sent int64, ok bool) {
	i := bytes.Index(line, pushMarker)
	if i < 0 {
		return 0, 0, 0, false
	}
	rest := line[i+len(pushMarker):]
	var nums [3]int64
	for k := range nums {
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			nums[k] = nums[k]*10 + int64(rest[j]-'0')
			j++
		}
		want := byte('-')
		if k == 2 {
			want = '"'
		}
		if j == 0 || j >= len(rest) || rest[j] != want {
			return 0, 0, 0, false
		}
		rest = rest[j+1:]
	}
	return int(nums[0]), int(nums[1]), nums[2], true
}

// pushID builds the id parseBenchData reads.
func pushID(run, seq int, sent time.Time) string {
	return "b" + strconv.Itoa(run) + "-" + strconv.Itoa(seq) + "-" + strconv.FormatInt(sent.UnixNano(), 10)
}

// closeAll ends every stream and waits for the readers.
func (w *worker) closeAll() {
	w.mu.Lock()
	w.closing = true
	for _, c := range w.slots {
		if c != nil {
			_ = c.Close()
		}
	}
	w.mu.Unlock()
	w.wg.Wait()
}
