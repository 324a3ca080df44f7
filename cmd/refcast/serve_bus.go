package main

import (
	"log/slog"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
)

// openEmbeddedBus opens the in-process bus.
func openEmbeddedBus(c *serveConfig, log *slog.Logger) (bus.Bus, func(), error) {
	b, err := memory.New(memory.Options{Partitions: c.partitions, History: c.history, MaxAge: c.historyAge})
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = b.Close() }, nil
}
