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
	Events  int          `json:"events,omitempty"` // reset: per-event slots
	Detail  bool         `json:"detail,omitempty"` // stats: include per-event figures
}

// connectSpec says which connections a worker holds. Connection i of the
// worker has the global index Start+i and subscribes to repo
// (Start+i) % Repos, named by fmt.Sprintf(RepoFmt, index).
type connectSpec struct {
	Server      string        `json:"server"`   // host:port, loopback
	LocalIP     string        `json:"local_ip"` // source address, 127.0.0.x
	Host        string        `json:"host"`     // Host header
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
	Open     int      `json:"open"`
	Failed   int      `json:"failed"`  // connection attempts that failed
	Dropped  int      `json:"dropped"` // streams the server ended
	Errors   []string `json:"errors,omitempty"`
	Received int64    `json:"received"` // events of the current run
	Counts   []int64  `json:"counts,omitempty"`
	MaxLat   []int64  `json:"max_lat,omitempty"` // per event, nanoseconds
	Err      string   `json:"err,omitempty"`
}

// runStats are the counters of one run; swapped whole on reset.
type runStats struct {
	run      int
	received atomic.Int64
	counts   []atomic.Int64
	maxLat   []atomic.Int64
}

type worker struct {
	stats atomic.Pointer[runStats]

	mu      sync.Mutex
	slots   []net.Conn // guarded by mu; nil when not open
	failed  int        // guarded by mu
	dropped int        // guarded by mu
	errs    []string   // guarded by mu; the first few
	closing bool       // guarded by mu
	wg      sync.WaitGroup
}

func runWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	raiseNoFile()
	w := &worker{}
	w.stats.Store(&runStats{run: -1})
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
			w.connect(ctx, c.Connect)
			st = w.snapshot(false)
		case "reset":
			rs := &runStats{run: c.Run, counts: make([]atomic.Int64, c.Events), maxLat: make([]atomic.Int64, c.Events)}
			w.stats.Store(rs)
			st = w.snapshot(false)
		case "stats":
			st = w.snapshot(c.Detail)
		case "close":
			w.closeAll()
			return enc.Encode(w.snapshot(false))
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

func (w *worker) snapshot(detail bool) workerStats {
	w.mu.Lock()
	st := workerStats{Failed: w.failed, Dropped: w.dropped, Errors: append([]string(nil), w.errs...)}
	for _, c := range w.slots {
		if c != nil {
			st.Open++
		}
	}
	w.mu.Unlock()
	rs := w.stats.Load()
	st.Received = rs.received.Load()
	if detail {
		st.Counts = make([]int64, len(rs.counts))
		st.MaxLat = make([]int64, len(rs.maxLat))
		for i := range rs.counts {
			st.Counts[i] = rs.counts[i].Load()
			st.MaxLat[i] = rs.maxLat[i].Load()
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
// when each has its response head or failed.
func (w *worker) connect(ctx context.Context, spec *connectSpec) {
	w.mu.Lock()
	if len(w.slots) < spec.Count {
		w.slots = append(w.slots, make([]net.Conn, spec.Count-len(w.slots))...)
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
		w.noteErr(err)
		return
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
		go w.open(ctx, &d, spec, i, path, func() { <-sem; setup.Done() })
	}
	setup.Wait()
}

// open dials one stream, reads its response head, calls ready, then reads
// frames until the stream ends.
func (w *worker) open(ctx context.Context, d *net.Dialer, spec *connectSpec, slot int, path string, ready func()) {
	fail := func(err error) {
		w.mu.Lock()
		w.failed++
		w.mu.Unlock()
		w.noteErr(err)
		ready()
	}
	conn, err := d.DialContext(ctx, "tcp", spec.Server)
	if err != nil {
		fail(err)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // no TIME_WAIT pile-up across rounds
	}
	_ = conn.SetDeadline(time.Now().Add(spec.Timeout))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + spec.Host + "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
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
	err = w.readFrames(r)
	w.mu.Lock()
	w.slots[slot] = nil
	if !w.closing {
		w.dropped++
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

// readFrames reads SSE lines until the stream ends and records every data
// line that carries a bench event.
func (w *worker) readFrames(r *bufio.Reader) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		if bytes.HasPrefix(line, []byte("data:")) {
			if run, seq, sent, ok := parseBenchData(line); ok {
				w.record(run, seq, time.Now().UnixNano()-sent)
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

func (w *worker) record(run, seq int, lat int64) {
	rs := w.stats.Load()
	if run != rs.run {
		return
	}
	rs.received.Add(1)
	if seq < 0 || seq >= len(rs.counts) {
		return
	}
	rs.counts[seq].Add(1)
	for {
		old := rs.maxLat[seq].Load()
		if lat <= old || rs.maxLat[seq].CompareAndSwap(old, lat) {
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
