//go:build !windows

package main

import (
	"log/slog"
	"os"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bolt"
)

// openEmbeddedBus opens the embedded bus, kept on disk in --data
// (REFCAST_DATA), by default in the user's state directory, so a restarted
// node keeps its history, ref state and epochs.
func openEmbeddedBus(c *serveConfig, log *slog.Logger) (bus.Bus, func(), error) {
	dir := c.data
	if dir == "" {
		// runServe has no Env to hand here; the process environment is what
		// a real run has. Tests pass --data.
		dir = defaultDataDir(Env{Getenv: os.Getenv})
	}
	b, err := bolt.Open(dir, bolt.Options{Partitions: c.partitions, History: c.history, MaxAge: c.historyAge})
	if err != nil {
		return nil, nil, err
	}
	log.Info("embedded bus opened", "data", b.Path())
	return b, func() {
		if err := b.Close(); err != nil {
			log.Error("close embedded bus", "err", err)
		}
	}, nil
}
