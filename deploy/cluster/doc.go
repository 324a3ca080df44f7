// Package cluster holds the multi-node test of refcast's deployment files:
// Redis, three real `refcast serve` processes and HAProxy running the
// unchanged deploy/haproxy.cfg, all on loopback, with pushes through a real
// git hook and SSE clients that connect only through the balancer. It
// proves that the nodes scale out horizontally and that a node draining
// (SIGTERM) or dying (SIGKILL) costs its clients nothing: they reconnect
// through the balancer with Last-Event-ID and miss no event and see none
// twice.
//
// It has no code outside its test and nothing imports it. It is not a
// benchmark (see cmd/refcast-bench) and not a deployment: `make cluster`
// runs it. It needs git, redis-server and haproxy on PATH; without them it
// is skipped loudly, and under CI=true it fails.
package cluster
