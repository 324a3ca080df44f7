package watermark

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMark(t *testing.T) {
	tests := []struct {
		name   string
		left   []int // Done calls each of the entries a, b, c needs
		done   []int // indexes of entries, in the order their parts finish
		want   []string
		popped string // the pop hook's values, in order, at the end
	}{
		{"in order", []int{1, 1, 1}, []int{0, 1, 2}, []string{"a", "b", "c"}, "abc"},
		{"out of order", []int{1, 1, 1}, []int{2, 0, 1}, []string{"", "a", "c"}, "abc"},
		{"hole", []int{1, 1, 1}, []int{1, 2}, []string{"", ""}, ""},
		{"two targets", []int{2, 1, 2}, []int{0, 1, 2, 0, 2}, []string{"", "", "", "b", "c"}, "abc"},
		{"finished at add", []int{1, 0, 1}, []int{0, 2}, []string{"b", "c"}, "abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var popped strings.Builder
			m := New(3, "", func(v string) { popped.WriteString(v) })
			var seqs []uint64
			for i, c := range []string{"a", "b", "c"} {
				if err := m.Reserve(context.Background(), nil); err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, m.Add(c, tt.left[i], c))
			}
			for i, d := range tt.done {
				m.Done(seqs[d])
				if got := m.Safe(); got != tt.want[i] {
					t.Errorf("after done(%d): safe %q, want %q", d, got, tt.want[i])
				}
			}
			if popped.String() != tt.popped {
				t.Errorf("popped %q, want %q", popped.String(), tt.popped)
			}
			if m.Len() != 3-len(tt.popped) {
				t.Errorf("len %d, want %d", m.Len(), 3-len(tt.popped))
			}
		})
	}
}

// TestMarkBounded: Reserve blocks while max entries are pending, until
// ctx is done or stop closes, and room comes back as entries leave.
func TestMarkBounded(t *testing.T) {
	m := New[struct{}](2, "start", nil)
	for _, c := range []string{"a", "b"} {
		if err := m.Reserve(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		m.Add(c, 1, struct{}{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := m.Reserve(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Reserve past max: %v, want the context's error", err)
	}
	stop := make(chan struct{})
	close(stop)
	if err := m.Reserve(context.Background(), stop); !errors.Is(err, ErrStopped) {
		t.Fatalf("Reserve after stop: %v, want ErrStopped", err)
	}
	if m.Safe() != "start" {
		t.Errorf("safe %q before anything finished", m.Safe())
	}
	m.Done(1)
	select {
	case <-m.Changed():
	default:
		t.Error("Changed not signalled")
	}
	if err := m.Reserve(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	m.Unreserve()
	if err := m.Reserve(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Oldest(); !ok || v != (struct{}{}) {
		t.Error("Oldest of a pending entry")
	}
}
