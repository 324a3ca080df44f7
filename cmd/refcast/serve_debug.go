package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// startDebug serves net/http/pprof on addr, a listener of its own: the
// public listener never carries it. Off unless --debug-addr is given.
// /debug/pprof/cmdline is left out: it would show a --publish-token given
// on the command line. The returned function stops the listener and waits
// for its goroutine.
func startDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-addr: listen on %s: %w", addr, err)
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			log.Warn("--debug-addr is not a loopback address: profiles reveal the node's internals to whoever reaches it", "addr", ln.Addr().String())
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// WriteTimeout is left unset: a CPU profile or trace streams for as
	// long as its seconds= asks.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	log.Info("pprof serving on the debug address", "addr", ln.Addr().String())
	return func() { _ = srv.Close(); <-done }, nil
}
