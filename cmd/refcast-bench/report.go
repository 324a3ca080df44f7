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
	return nil
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
