package redis

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestOutageLogsOneLineEachWay: every partition failing and recovering logs
// one line when Redis goes away and one when it is back, with the count of
// partitions affected, not one per partition.
func TestOutageLogsOneLineEachWay(t *testing.T) {
	var buf bytes.Buffer
	o := outage{log: slog.New(slog.NewTextHandler(&buf, nil)), failing: make([]bool, 4)}
	for pi := range 4 {
		o.fail(pi, "xread", errors.New("connection refused"))
		o.fail(pi, "xread", errors.New("connection refused")) // a repeat changes nothing
	}
	for pi := range 3 {
		o.recovered(pi)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("%d lines while the outage lasts, want 1:\n%s", n, buf.String())
	}
	o.recovered(3)
	o.recovered(3)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "unavailable") || !strings.Contains(lines[0], "partitions=4") {
		t.Errorf("down line: %s", lines[0])
	}
	if !strings.Contains(lines[1], "back") || !strings.Contains(lines[1], "partitions=4") || !strings.Contains(lines[1], "outage=") {
		t.Errorf("back line: %s", lines[1])
	}
	// A second outage is logged again.
	o.fail(2, "check head", errors.New("EOF"))
	o.recovered(2)
	if n := strings.Count(buf.String(), "\n"); n != 4 {
		t.Fatalf("%d lines after a second outage, want 4:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "partitions=1 ") {
		t.Errorf("second outage affected 1 partition:\n%s", buf.String())
	}
}
