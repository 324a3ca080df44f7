package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/server"
)

// runServe runs a refcast node in this process, on the memory bus (or
// Redis with -redis), with
// a pprof listener beside it: the same server package `refcast serve`
// runs, made observable (goroutine counts, CPU and heap profiles) without
// adding anything to the server itself.
func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("refcast-bench serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "node address (loopback)")
	pprofAddr := fs.String("pprof", "127.0.0.1:6060", "pprof address (loopback)")
	token := fs.String("token", os.Getenv("REFCAST_PUBLISH_TOKEN"), "publish token")
	maxConns := fs.Int("max-connections", 30000, "streams per node")
	heartbeat := fs.Duration("heartbeat", server.DefaultHeartbeat, "heartbeat interval")
	redisURL := fs.String("redis", "", "run on the Redis bus at this URL instead of the memory bus")
	memRate := fs.Int("memprofilerate", 0, "runtime.MemProfileRate (1: record every allocation, for exact per-connection heap figures; 0: Go's default)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	for _, a := range []string{*listen, *pprofAddr} {
		if err := checkLoopback("http://" + a); err != nil {
			return err
		}
	}
	if *memRate > 0 {
		runtime.MemProfileRate = *memRate
	}
	raiseNoFile()
	var err error
	var b bus.Bus
	if *redisURL != "" {
		b, err = redis.Open(ctx, *redisURL, redis.Options{})
	} else {
		b, err = memory.New(memory.Options{})
	}
	if err != nil {
		return err
	}
	defer b.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// PublishRate -1: no per-client publish limit, as the benchmark
	// publishes from one address (refcast serve --publish-rate -1).
	srv, err := server.New(server.Options{Bus: b, Logger: log, PublishToken: *token, PublishRate: -1,
		MaxConnections: *maxConns, Heartbeat: *heartbeat})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	pln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("listen on %s: %w", *pprofAddr, err)
	}
	ps := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = ps.Serve(pln) }()
	fmt.Fprintf(os.Stderr, "refcast-bench serve: node on %s, pprof on %s\n", ln.Addr(), pln.Addr())
	err = srv.Serve(ctx, ln, time.Second)
	_ = ps.Close()
	<-done
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
