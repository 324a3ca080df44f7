package memory_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
	"github.com/refcast/refcast/bus/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T, opts bustest.Options) bus.Bus {
		b, err := memory.New(memory.Options{Partitions: opts.Partitions, History: opts.History, MaxAge: opts.MaxAge})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	})
}
