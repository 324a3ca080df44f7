package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// TestMain lets the test binary be a worker: the coordinator re-executes
// its own executable with workerEnv set, as refcast-bench does.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := runWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseNodes(t *testing.T) {
	tests := []struct {
		name              string
		urls, pids, pprof string
		want              []node
		err               string // a part of the error; "" for none
	}{
		{name: "one", urls: "http://127.0.0.1:8080", pids: "0",
			want: []node{{url: "http://127.0.0.1:8080", host: "127.0.0.1:8080"}}},
		{name: "three with pids and pprof", urls: "http://127.0.0.1:1, http://127.0.0.1:2/,http://127.0.0.2:1",
			pids: "11,12,13", pprof: "http://127.0.0.1:9001,http://127.0.0.1:9002,http://127.0.0.1:9003/",
			want: []node{
				{url: "http://127.0.0.1:1", host: "127.0.0.1:1", pid: 11, pprof: "http://127.0.0.1:9001"},
				{url: "http://127.0.0.1:2", host: "127.0.0.1:2", pid: 12, pprof: "http://127.0.0.1:9002"},
				{url: "http://127.0.0.2:1", host: "127.0.0.2:1", pid: 13, pprof: "http://127.0.0.1:9003"},
			}},
		{name: "empty", urls: "", err: "-url: no URL given"},
		{name: "empty entry", urls: "http://127.0.0.1:1,,http://127.0.0.1:2", err: "entry 2 of"},
		{name: "trailing comma", urls: "http://127.0.0.1:1,", err: "entry 2 of"},
		{name: "twice", urls: "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:1/", err: "entries 1 and 3 are both 127.0.0.1:1"},
		{name: "not loopback", urls: "http://127.0.0.1:1,http://10.0.0.1:1", err: "-url entry 2"},
		{name: "name", urls: "http://localhost:1", err: "127.x.x.x"},
		{name: "https", urls: "https://127.0.0.1:1", err: "scheme must be http"},
		{name: "no port", urls: "http://127.0.0.1", err: "no port"},
		{name: "path", urls: "http://127.0.0.1:1/v1/events", err: "no path"},
		{name: "too many", urls: manyURLs(maxNodes + 1), err: "at most 16"},
		{name: "fewer pids", urls: "http://127.0.0.1:1,http://127.0.0.1:2", pids: "11", err: "1 process ids for 2 URLs"},
		{name: "more pids", urls: "http://127.0.0.1:1", pids: "11,12", err: "2 process ids for 1 URLs"},
		{name: "bad pid", urls: "http://127.0.0.1:1,http://127.0.0.1:2", pids: "11,x", err: `-pid entry 2: "x" is not a process id`},
		{name: "zero pid in a list", urls: "http://127.0.0.1:1,http://127.0.0.1:2", pids: "11,0", err: "not a process id"},
		{name: "pprof count", urls: "http://127.0.0.1:1,http://127.0.0.1:2", pprof: "http://127.0.0.1:9", err: "-pprof: 1 URLs for 2"},
		{name: "pprof not loopback", urls: "http://127.0.0.1:1", pprof: "http://10.1.1.1:9", err: "-pprof entry 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseNodes(tt.urls, tt.pids, tt.pprof)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func manyURLs(n int) string {
	var us []string
	for i := range n {
		us = append(us, "http://127.0.0.1:"+strconv.Itoa(1000+i))
	}
	return strings.Join(us, ",")
}

func TestParseRedisPids(t *testing.T) {
	if ps, err := parseIDs("-redis-pid", "7, 8,9"); err != nil || fmt.Sprint(ps) != "[7 8 9]" {
		t.Fatalf("got %v, %v", ps, err)
	}
	if ps, err := parseIDs("-redis-pid", ""); err != nil || ps != nil {
		t.Fatalf("empty: got %v, %v", ps, err)
	}
	if _, err := parseIDs("-redis-pid", "7,-1"); err == nil || !strings.Contains(err.Error(), `-redis-pid entry 2: "-1"`) {
		t.Fatalf("negative: err %v", err)
	}
}

// A malformed list stops the tool before it starts a worker or dials.
func TestCoordinatorRefusesMalformedLists(t *testing.T) {
	for _, args := range [][]string{
		{"-token", "t", "-url", "http://127.0.0.1:1,,http://127.0.0.1:2"},
		{"-token", "t", "-url", "http://127.0.0.1:1,http://127.0.0.1:2", "-pid", "5"},
		{"-token", "t", "-url", "http://127.0.0.1:1", "-redis-pid", "x"},
	} {
		var out bytes.Buffer
		err := runCoordinator(context.Background(), args, &out)
		if err == nil {
			t.Errorf("%q: no error", args)
		}
		if out.Len() != 0 {
			t.Errorf("%q: printed %q before refusing", args, out.String())
		}
	}
}

func TestPlanSpreadsEvenly(t *testing.T) {
	tests := []struct {
		conns, repos, nodes int
		assigned            []int
	}{
		{9000, 1, 3, []int{3000, 3000, 3000}},
		{10, 1, 3, []int{4, 3, 3}},
		{9000, 1000, 3, []int{3000, 3000, 3000}},
		{5, 2, 1, []int{5}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%d/%d", tt.conns, tt.repos, tt.nodes), func(t *testing.T) {
			p := newPlan(tt.conns, tt.repos, tt.nodes)
			if fmt.Sprint(p.assigned) != fmt.Sprint(tt.assigned) {
				t.Fatalf("assigned %v, want %v", p.assigned, tt.assigned)
			}
			var sum int64
			for r, row := range p.subs {
				var n int64
				for k, v := range row {
					sum += v
					n += v
					// 1,000 repos over 3 nodes: every repo's 9 streams are
					// 3 on each node, so each node takes part in every event.
					if tt.repos == 1000 && v != 3 {
						t.Fatalf("repo %d has %d streams on node %d, want 3", r, v, k)
					}
				}
				if n != p.want(r, p.assigned) {
					t.Fatalf("repo %d: want() %d, streams %d", r, p.want(r, p.assigned), n)
				}
			}
			if sum != int64(tt.conns) {
				t.Fatalf("%d streams planned, want %d", sum, tt.conns)
			}
		})
	}
}

// The worker puts stream g on node g % nodes, as the plan does.
func TestWorkerAndPlanAgree(t *testing.T) {
	const conns, nodes = 10, 3
	p := newPlan(conns, 1, nodes)
	w := &worker{}
	for g := range conns {
		w.slotOf = append(w.slotOf, g%nodes)
	}
	counts := make([]int, nodes)
	for _, k := range w.slotOf {
		counts[k]++
	}
	if fmt.Sprint(counts) != fmt.Sprint(p.assigned) {
		t.Fatalf("worker %v, plan %v", counts, p.assigned)
	}
}

func TestTally(t *testing.T) {
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	// 6 streams over 2 nodes on one repo: 3 each. Event 0 reaches all,
	// event 1 misses one stream of node 2, event 2 was not published.
	p := newPlan(6, 1, 2)
	per := []nodeStats{
		{Counts: []int64{3, 3, 0}, MaxLat: []int64{ms(4), ms(5), 0}},
		{Counts: []int64{3, 2, 1}, MaxLat: []int64{ms(7), ms(2), ms(1)}},
	}
	open := []int{3, 3}
	published := func(seq int) bool { return seq != 2 }
	tl := p.tally(per, 0, 3, open, func(int) int { return 0 }, published)
	if tl.all.expected != 12 || tl.all.delivered != 12 { // the unpublished event's late delivery counts as delivered
		t.Fatalf("all: %d/%d, want 12/12", tl.all.delivered, tl.all.expected)
	}
	if fmt.Sprint(tl.expected, tl.delivered, tl.incomplete) != "[6 6] [6 6] [0 1]" {
		t.Fatalf("per node expected %v delivered %v incomplete %v", tl.expected, tl.delivered, tl.incomplete)
	}
	if tl.all.incomplete != 1 {
		t.Fatalf("all incomplete %d, want 1", tl.all.incomplete)
	}
	// the reach-all time of event 0 is the later node's
	if fmt.Sprint(tl.all.lat) != fmt.Sprint([]time.Duration{7 * time.Millisecond, -1}) {
		t.Fatalf("all lat %v", tl.all.lat)
	}
	if fmt.Sprint(tl.lat[0]) != fmt.Sprint([]time.Duration{4 * time.Millisecond, 5 * time.Millisecond}) {
		t.Fatalf("node 1 lat %v", tl.lat[0])
	}
}

func TestMerge(t *testing.T) {
	sts := []workerStats{
		{Nodes: []nodeStats{{Open: 2, Received: 3, Counts: []int64{1, 2}, MaxLat: []int64{10, 5}}, {Open: 1, Dropped: 1}}, Errors: []string{"e1"}},
		{Nodes: []nodeStats{{Open: 1, Failed: 1, Counts: []int64{1, 0, 4}, MaxLat: []int64{3, 9, 1}}, {Open: 2}}},
	}
	per, errs := merge(sts, 2)
	if per[0].Open != 3 || per[0].Failed != 1 || per[1].Open != 3 || per[1].Dropped != 1 {
		t.Fatalf("per %+v", per)
	}
	if fmt.Sprint(per[0].Counts, per[0].MaxLat) != "[2 2 4] [10 9 1]" {
		t.Fatalf("counts %v maxlat %v", per[0].Counts, per[0].MaxLat)
	}
	if fmt.Sprint(opens(per), sumNodes(per).Open, errs) != "[3 3] 6 [e1]" {
		t.Fatalf("opens %v sum %d errs %v", opens(per), sumNodes(per).Open, errs)
	}
}

// Three real refcast nodes on one real Redis, measured with real workers:
// streams are spread evenly, every node's streams receive the events
// published to the first, and every figure comes per node and for all.
func TestTierThreeNodesOnRedis(t *testing.T) {
	testnode.Require(t, "redis-server")
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{})
	redisPid := redisProcessID(t, rs)
	var urls, pids []string
	for range 3 {
		n := testnode.Start(t, bin, "", "--redis", rs.URL(), "--publish-token", "t", "--publish-rate", "-1",
			"--max-per-client", "0", "--log-level", "warn")
		urls, pids = append(urls, n.URL), append(pids, strconv.Itoa(n.Pid()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := runCoordinator(ctx, []string{
		"-token", "t", "-url", strings.Join(urls, ","), "-pid", strings.Join(pids, ","), "-redis-pid", strconv.Itoa(redisPid),
		"-scenarios", "fanout,spread,rate", "-conns", "31", "-per-worker", "20", "-events", "3", "-interval", "50ms",
		"-repos", "7", "-spread-events", "21", "-spread-rate", "200",
		"-rate-conns", "30", "-rate-repos", "7", "-rate-duration", "500ms", "-rate-tries", "1", "-publishers", "2",
		"-settle", "100ms", "-timeout", "2m",
	}, &out)
	if err != nil {
		t.Fatalf("refcast-bench: %v\n%s", err, out.String())
	}
	rs2 := results(t, out.String())
	if len(rs2) != 3 {
		t.Fatalf("%d RESULT lines, want 3:\n%s", len(rs2), out.String())
	}
	for _, r := range rs2 {
		t.Run(r.Scenario, func(t *testing.T) {
			if len(r.Nodes) != 3 {
				t.Fatalf("%d nodes, want 3", len(r.Nodes))
			}
			conns, wantOpen := 31, []int{11, 10, 10}
			if r.Scenario == "rate" {
				conns, wantOpen = 30, []int{10, 10, 10}
			}
			if r.Open != conns || r.Workers != 2 {
				t.Fatalf("open %d from %d workers, want %d from 2", r.Open, r.Workers, conns)
			}
			for k, n := range r.Nodes {
				if n.URL != urls[k] || n.Open != wantOpen[k] {
					t.Errorf("node %d: %s with %d open, want %s with %d", k+1, n.URL, n.Open, urls[k], wantOpen[k])
				}
				if n.RSSAfterKB == 0 {
					t.Errorf("node %d: no memory figure: its pid was not sampled", k+1)
				}
			}
			nodes, delivered, expected := r.Nodes, r.Delivered, r.Expected
			if r.Scenario == "rate" {
				if len(r.Trials) != 1 {
					t.Fatalf("%d trials, want 1", len(r.Trials))
				}
				tr := r.Trials[0]
				nodes, delivered, expected = tr.Nodes, tr.Delivered, tr.Expected
				if tr.Published == 0 {
					t.Fatal("rate: nothing published")
				}
			} else if delivered != expected || r.Incomplete != 0 || r.Dropped != 0 {
				// fanout and spread are paced and waited for: nothing is lost
				t.Errorf("delivered %d/%d, %d incomplete, %d dropped", delivered, expected, r.Incomplete, r.Dropped)
			}
			var sumD, sumE int64
			for k, n := range nodes {
				sumD += n.Delivered
				sumE += n.Expected
				if n.Expected == 0 || n.Delivered == 0 {
					t.Errorf("node %d: delivered %d/%d: every node must take part", k+1, n.Delivered, n.Expected)
				}
			}
			if sumD != delivered || sumE != expected {
				t.Errorf("nodes sum to %d/%d, all says %d/%d", sumD, sumE, delivered, expected)
			}
		})
	}
	if !strings.Contains(out.String(), "redis (1 process(es))") {
		t.Errorf("no Redis CPU line:\n%s", out.String())
	}
	var rep bytes.Buffer
	if err := runReport(nil, strings.NewReader(out.String()), &rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range append([]string{"| all 3 |", "tier (per node"}, urls...) {
		if !strings.Contains(rep.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, rep.String())
		}
	}

	// One URL: the RESULT line is what it was before several nodes existed.
	out.Reset()
	if err := runCoordinator(ctx, []string{"-token", "t", "-url", urls[1], "-scenarios", "fanout", "-conns", "5",
		"-events", "2", "-interval", "50ms", "-settle", "100ms"}, &out); err != nil {
		t.Fatalf("one node: %v\n%s", err, out.String())
	}
	one := results(t, out.String())
	if len(one) != 1 || one[0].Nodes != nil || one[0].Delivered != one[0].Expected || one[0].Expected != 10 {
		t.Fatalf("one node: %+v", one)
	}
	if strings.Contains(out.String(), `"nodes"`) {
		t.Fatalf("one node: the RESULT line has per-node figures:\n%s", out.String())
	}
}

func redisProcessID(t *testing.T, rs *redistest.Server) int {
	t.Helper()
	info, err := rs.Client().Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatalf("no process_id in INFO server:\n%s", info)
	return 0
}

func results(t *testing.T, out string) []result {
	t.Helper()
	var rs []result
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			var r result
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("bad RESULT line: %v", err)
			}
			rs = append(rs, r)
		}
	}
	return rs
}

func TestNextPace(t *testing.T) {
	for _, tc := range []struct {
		name string
		tr   trial
		want float64
	}{
		// Everything arrived but late: 80 % of what was published.
		{"late", trial{Published: 500, Achieved: 100, Delivered: 50000, Expected: 50000}, 80},
		// 54,000 streams, 2,755 events published in 5 s, 87 events'
		// worth delivered: 80 % of 17.4 events/s, not of 551.
		{"far behind", trial{Published: 2755, Achieved: 551, Delivered: 87 * 54000, Expected: 2755 * 54000}, 0.8 * 87 / 5},
		{"nothing delivered", trial{Published: 10, Achieved: 2, Delivered: 0, Expected: 100}, 1},
		{"nothing published", trial{}, 1},
	} {
		if got := nextPace(tc.tr, 5*time.Second); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: nextPace = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRateStartChecked: -rate-start is 0 (unpaced) or a pace; anything
// else is refused with the flag's name.
func TestRateStartChecked(t *testing.T) {
	for _, v := range []float64{-1, math.NaN(), math.Inf(1)} {
		c := config{url: "http://127.0.0.1:1", perWorker: 100, events: 1, spreadN: 1, repos: 1, rateRepos: 1, rateStart: v}
		if err := c.check(); err == nil || !strings.Contains(err.Error(), "-rate-start") {
			t.Errorf("-rate-start %v: err = %v, want one naming -rate-start", v, err)
		}
	}
	for _, v := range []float64{0, 0.5, 200} {
		c := config{url: "http://127.0.0.1:1", perWorker: 100, events: 1, spreadN: 1, repos: 1, rateRepos: 1, rateStart: v}
		if err := c.check(); err != nil {
			t.Errorf("-rate-start %v: %v", v, err)
		}
	}
}
