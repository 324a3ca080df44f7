package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
)

// runReport reads the tool's output (RESULT lines, other lines ignored)
// and prints Markdown tables, one row per target and label.
func runReport(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("refcast-bench report", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var rs []result
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "RESULT ")
		if !ok {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return fmt.Errorf("bad RESULT line: %w", err)
		}
		rs = append(rs, r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, sc := range []string{"fanout", "spread", "rate"} {
		var rows []result
		for _, r := range rs {
			if r.Scenario == sc {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(out, "\n%s\n\n", sc)
		switch sc {
		case "fanout", "spread":
			fmt.Fprintln(out, "| round | target | conns (open) | RSS/conn | PSS/conn | CPU µs/delivery | reach-all p50 | p99 | max | delivered/expected | dropped |")
			fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|---|")
			for _, r := range rows {
				fmt.Fprintf(out, "| %s | %s | %d (%d) | %s | %s | %.2f | %s | %s | %s | %d/%d | %d |\n",
					r.Label, r.Target, r.Conns, r.Open, bytesStr(r.RSSPerConn), bytesStr(r.PSSPerConn), r.CPUPerDeliv,
					ms(r.P50Ms), ms(r.P99Ms), ms(r.MaxMs), r.Delivered, r.Expected, r.Dropped)
			}
		case "rate":
			fmt.Fprintln(out, "| round | target | conns | trials (rate/s: delivered/expected) | sustained events/s | CPU µs/delivery | reach-all p50 |")
			fmt.Fprintln(out, "|---|---|---|---|---|---|---|")
			for _, r := range rows {
				var ts []string
				for _, t := range r.Trials {
					ts = append(ts, fmt.Sprintf("%s %.0f: %d/%d", pacedName(t.Paced), t.Achieved, t.Delivered, t.Expected))
				}
				fmt.Fprintf(out, "| %s | %s | %d | %s | %.1f | %.2f | %s |\n",
					r.Label, r.Target, r.Open, strings.Join(ts, "; "), r.Rate, r.CPUPerDeliv, ms(r.P50Ms))
			}
		}
	}
	tierTable(out, rs)
	return nil
}

// tierTable prints, for runs over several nodes or with -redis-pid, one row
// per node and one for all of them. For rate the rows are the sustained
// trial's (or, when none was, the last trial's).
func tierTable(out io.Writer, rs []result) {
	header := false
	for _, r := range rs {
		if len(r.Nodes) == 0 && r.RedisCPUPerEvent == 0 && r.RedisCPUSec == 0 && r.RedisIdleCPUPerS == 0 {
			continue
		}
		if !header {
			header = true
			fmt.Fprintf(out, "\ntier (per node and all; events published to the first node)\n\n")
			fmt.Fprintln(out, "| round | scenario | repos | node | open | delivered/expected | dropped | CPU µs/delivery | reach-all p50 | p99 | max | Redis CPU µs/event | sustained events/s |")
			fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		}
		repos := max(1, r.Repos)
		nodes, all := r.Nodes, nodeResult{
			URL: fmt.Sprintf("all %d", len(r.Nodes)), Open: r.Open, Delivered: r.Delivered, Expected: r.Expected,
			Dropped: r.Dropped, CPUPerDeliv: r.CPUPerDeliv, P50Ms: r.P50Ms, P99Ms: r.P99Ms, MaxMs: r.MaxMs,
		}
		redis, rate := r.RedisCPUPerEvent, "–"
		if r.Scenario == "rate" && len(r.Trials) > 0 {
			t := r.Trials[len(r.Trials)-1]
			for _, tr := range r.Trials {
				if tr.Sustained {
					t = tr
					break
				}
			}
			nodes = t.Nodes
			all.Delivered, all.Expected, all.Dropped, all.CPUPerDeliv = t.Delivered, t.Expected, t.Dropped, t.CPUPerDel
			all.P50Ms, all.P99Ms, all.MaxMs = t.P50Ms, t.P99Ms, 0
			redis, rate = t.RedisCPU, fmt.Sprintf("%.1f", r.Rate)
			if !t.Sustained {
				rate = fmt.Sprintf("none (last %.0f/s)", t.Achieved)
			}
		}
		row := func(n nodeResult, redis, rate string) {
			mx := ms(n.MaxMs)
			if r.Scenario == "rate" && n.MaxMs == 0 {
				mx = "–"
			}
			fmt.Fprintf(out, "| %s | %s | %d | %s | %d | %d/%d | %d | %.2f | %s | %s | %s | %s | %s |\n",
				r.Label, r.Scenario, repos, n.URL, n.Open, n.Delivered, n.Expected, n.Dropped, n.CPUPerDeliv,
				ms(n.P50Ms), ms(n.P99Ms), mx, redis, rate)
		}
		for _, n := range nodes {
			row(n, "", "")
		}
		redisStr := "–"
		if redis > 0 {
			redisStr = fmt.Sprintf("%.1f", redis)
		}
		if r.RedisIdleCPUPerS > 0 {
			redisStr += fmt.Sprintf(" (idle %.0f ms/s)", r.RedisIdleCPUPerS)
		}
		if len(nodes) == 0 {
			all.URL = "node"
		}
		row(all, redisStr, rate)
	}
}

func bytesStr(b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f B", b)
}

func ms(v float64) string {
	if v < 0 {
		return "incomplete"
	}
	return fmt.Sprintf("%.1f ms", v)
}
