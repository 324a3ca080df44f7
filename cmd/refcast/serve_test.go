package main

import (
	"testing"
	"time"

	"github.com/refcast/refcast/server"
)

// TestBatchDelayFlag: on the command line 0 turns batching off, which in
// server.Options is a negative value (0 there takes the default).
func TestBatchDelayFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag, want time.Duration
	}{
		{server.DefaultBatchDelay, server.DefaultBatchDelay},
		{0, -1},
		{-time.Second, -1},
		{3 * time.Millisecond, 3 * time.Millisecond},
	} {
		if got := batchDelayOption(tc.flag); got != tc.want {
			t.Errorf("--batch-delay %v: Options.BatchDelay %v, want %v", tc.flag, got, tc.want)
		}
	}
}
