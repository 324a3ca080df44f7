// Command refcast-bench is refcast's load tool: it opens many Server-Sent
// Events connections to a node from several worker processes, publishes
// timestamped events through the node's publish endpoint, and prints what
// docs/performance.md records: connections, server memory per connection,
// server CPU per delivery, fan-out latency, delivered/expected, and the
// highest publish rate sustained with nothing lost.
//
// It measures one node or a tier: -url takes several comma-separated
// nodes sharing a bus, spreads the streams evenly over them (stream i on
// URL i mod N), publishes to the first, and reports every figure per node
// and for all; -pid and -pprof then name one process and profile per URL,
// and -redis-pid the Redis servers whose CPU per published event it
// reports (deploy/bench/tier.sh runs it so).
//
// It speaks two servers, so the same client measures both in one run:
// refcast (GET /v1/events, POST /v1/publish) and nginx with nchan (an
// EventSource subscriber location and a publisher location; see
// deploy/bench/nchan.conf).
//
// The tool is one binary with three roles:
//
//   - the coordinator (the default): spawns workers, publishes, samples each
//     server's /proc/<pid>/stat and /proc/<pid>/status, and reports;
//   - a worker (hidden: started by the coordinator with REFCAST_BENCH_WORKER=1):
//     holds up to -per-worker connections from its own source address
//     127.0.0.x, so no process needs more than 20,000 open files;
//   - "report": Markdown tables from RESULT lines.
//
// It is a pure client: it measures the node as shipped, `refcast serve`,
// whose --debug-addr gives it goroutine counts (-pprof) and profiles. It is
// not a general HTTP load generator: every loop is bounded in count and
// time, and it only ever dials loopback addresses.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "refcast-bench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if os.Getenv(workerEnv) == "1" {
		return runWorker(ctx, os.Stdin, os.Stdout)
	}
	if len(args) > 0 {
		switch args[0] {
		case "report":
			return runReport(args[1:], os.Stdin, os.Stdout)
		}
	}
	return runCoordinator(ctx, args, os.Stdout)
}
