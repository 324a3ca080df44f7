package fanout

import (
	"fmt"
	"strings"
	"testing"

	"github.com/refcast/refcast/bus"
)

// worstFilter is an accepted filter at the limits of bus/pattern.go: 64
// repo globs and 64 ref patterns, 2,048 bytes of them in all, wildcards
// in every one (8 in the ref patterns, ** in the globs), distinct per i so
// the engine cannot intern it with another stream's.
func worstFilter(tb testing.TB, i int) bus.Filter {
	tb.Helper()
	var repos, refs []string
	for j := range bus.MaxReposPerFilter {
		repos = append(repos, fmt.Sprintf("o%d/**/r%d*", j, i))
	}
	for j := range bus.MaxPatternsPerFilter - 1 {
		refs = append(refs, fmt.Sprintf("refs/*/a*b%d", j))
	}
	used := 0
	for _, r := range append(repos, refs...) {
		used += len(r)
	}
	// The last ref pattern takes what is left of the bytes, with 8 wildcards.
	last := "refs/" + strings.Repeat("*x", bus.MaxWildcards-1) + "*"
	if pad := bus.MaxFilterBytes - used - len(last); pad > 0 {
		last += strings.Repeat("y", min(pad, bus.MaxRefPatternLen-len(last)))
	}
	refs = append(refs, last)
	f, err := bus.ParseFilter(repos, refs)
	if err != nil {
		tb.Fatalf("worst accepted filter refused: %v", err)
	}
	return f
}

// TestWorstFilterStreamMemory: a stream with the worst accepted filter
// costs at most 16 KB of heap (idle, registered, its filter compiled and
// indexed). N streams are registered in-process (no socket: a handler-path
// stream, so the figure is the engine's and the filter's alone; a
// hijacked connection adds its socket and the kernel's buffers). Measured:
// about 8.7 KB, so the bound has some 7 KB of margin.
func TestWorstFilterStreamMemory(t *testing.T) {
	const streams, perStream = 500, 16 << 10
	n := runEngine(t, nil)
	before := heapInuse()
	sts := make([]Stream, 0, streams)
	for i := range streams {
		st, _, err := n.Register(Spec{Filter: worstFilter(t, i), Handler: true})
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	after := heapInuse()
	per := float64(after-min(after, before)) / streams
	t.Logf("%.0f bytes of heap per stream with the worst accepted filter (%d streams)", per, streams)
	if per > perStream {
		t.Errorf("a stream with the worst accepted filter costs %.0f bytes, want at most %d", per, perStream)
	}
	for _, st := range sts {
		st.Remove(ReasonClosed)
	}
}
