package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// scrape reads url's /metrics: every refcast_* metric family with its type
// and label names (le of histogram buckets left out), and the value of
// every unlabelled sample.
type scraped struct {
	types  map[string]string              // family -> counter, gauge, histogram
	labels map[string]map[string]struct{} // family -> label names
	values map[string]float64             // unlabelled sample -> value
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)`)
var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

func scrape(t *testing.T, url string) scraped {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	s := scraped{types: map[string]string{}, labels: map[string]map[string]struct{}{}, values: map[string]float64{}}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			if strings.HasPrefix(f[2], "refcast_") {
				s.types[f[2]] = f[3]
				s.labels[f[2]] = map[string]struct{}{}
			}
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil || !strings.HasPrefix(m[1], "refcast_") {
			continue
		}
		fam := m[1]
		if _, ok := s.types[fam]; !ok {
			fam = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(fam, "_bucket"), "_sum"), "_count")
		}
		for _, l := range labelName.FindAllStringSubmatch(m[3], -1) {
			if l[1] != "le" && s.labels[fam] != nil {
				s.labels[fam][l[1]] = struct{}{}
			}
		}
		if m[2] == "" {
			v, err := strconv.ParseFloat(m[4], 64)
			if err == nil {
				s.values[m[1]] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// docMetric is a row of the metrics table in docs/operations.md:
// | `name{label,label}` | type | meaning |
var docMetric = regexp.MustCompile("^\\| `(refcast_[a-z0-9_]+)(\\{([a-z_,]*)\\})?` \\| ([a-z]+) \\|")

// TestMetricsDocumented: every refcast_* metric a node serves (with
// --spool and --queue, so the spool and queue gauges too) is in
// docs/operations.md's metrics table with its type and labels, every row of the table is served, and every
// refcast_* name in the alert expressions (the docs' and deploy/'s) is one
// the node serves.
func TestMetricsDocumented(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	node := testnode.Start(t, bin, "", "--data", t.TempDir(), "--spool", t.TempDir(), "--queue", t.TempDir(), "--drain", "100ms")
	got := scrape(t, node.URL)

	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for line := range strings.Lines(string(doc)) {
		m := docMetric.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		name, typ := m[1], m[4]
		documented[name] = true
		gotType, ok := got.types[name]
		if !ok {
			t.Errorf("docs/operations.md documents %s, which the node does not serve", name)
			continue
		}
		if typ != gotType {
			t.Errorf("docs/operations.md: %s is a %s, the node serves a %s", name, typ, gotType)
		}
		var want []string
		if m[3] != "" {
			want = strings.Split(m[3], ",")
		}
		var have []string
		for l := range got.labels[name] {
			have = append(have, l)
		}
		slices.Sort(want)
		slices.Sort(have)
		if !slices.Equal(want, have) {
			t.Errorf("docs/operations.md: %s has labels %v, the node serves %v", name, want, have)
		}
	}
	for name := range got.types {
		if !documented[name] {
			t.Errorf("the node serves %s, missing from the metrics table of docs/operations.md", name)
		}
	}

	// Alert expressions: the docs' alert table, and any expr: in deploy/.
	exprs := []string{}
	if i := strings.Index(string(doc), "Suggested alerts"); i >= 0 {
		for line := range strings.Lines(string(doc)[i:]) {
			if !strings.HasPrefix(line, "|") {
				if len(exprs) > 0 {
					break
				}
				continue
			}
			exprs = append(exprs, line)
		}
	}
	if len(exprs) == 0 {
		t.Fatal("docs/operations.md has no table of suggested alerts")
	}
	err = filepath.WalkDir(filepath.Join("..", "..", "deploy"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yml") || strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".rules")) {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, "expr:") {
				exprs = append(exprs, line)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`refcast_[a-z0-9_]+`)
	for _, e := range exprs {
		for _, name := range used.FindAllString(e, -1) {
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && got.types[b] == "histogram" {
					base = b
				}
			}
			if _, ok := got.types[base]; !ok {
				t.Errorf("alert expression uses %s, which the node does not serve: %s", name, strings.TrimSpace(e))
			}
		}
	}
}

// TestMetricsBusHealthRedis: killing Redis takes refcast_bus_up to 0 and
// moves refcast_bus_reconnects_total; once Redis is back, refcast_bus_up
// is 1 again and the outage is counted in refcast_bus_outage_seconds_total.
func TestMetricsBusHealthRedis(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{})
	n := startLoggedNode(t, bin, "--redis", rs.URL(), "--publish-token", wtToken)
	n.waitReadyz(t, http.StatusOK, 30*time.Second)
	waitMetrics(t, n, "bus up", func(s scraped) bool { return s.values["refcast_bus_up"] == 1 })

	rs.Kill()
	waitMetrics(t, n, "bus down after kill -9", func(s scraped) bool {
		return s.values["refcast_bus_up"] == 0 && s.values["refcast_bus_reconnects_total"] > 0
	})
	rs.Restart()
	waitMetrics(t, n, "bus up after restart", func(s scraped) bool {
		return s.values["refcast_bus_up"] == 1 && s.values["refcast_bus_outage_seconds_total"] > 0
	})
}

// waitMetrics scrapes the node until ok, failing after 30 s with the log.
func waitMetrics(t *testing.T, n *loggedNode, what string, ok func(scraped) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := scrape(t, n.url)
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s; bus_up=%v reconnects=%v outage=%v\nlog:\n%s", what,
				s.values["refcast_bus_up"], s.values["refcast_bus_reconnects_total"], s.values["refcast_bus_outage_seconds_total"], n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
