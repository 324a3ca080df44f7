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
	b, err := bolt.Open(dir, bolt.Options{Partitions: c.partitions, History: c.history, MaxAge: c.historyAge, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	log.Info("embedded bus opened", "data", b.Path(), "replayed", b.Replayed())
	if logGen, next := b.UnmatchedLog(); logGen != 0 {
		log.Warn("the embedded bus's log was not replayed: its records are of a later generation than the data file expects, so the file was restored or moved without its log and may lack the pushes in it",
			"log", bolt.WALFileName, "log_generation", logGen, "expected", next)
	}
	return b, func() {
		if err := b.Close(); err != nil {
			log.Error("close embedded bus", "err", err)
		}
	}, nil
}
