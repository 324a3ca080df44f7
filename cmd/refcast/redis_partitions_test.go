package main

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// recordDeployment writes what a deployment of 16 partitions records in
// its Redis on first use.
func recordDeployment(t *testing.T, rs *redistest.Server) {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: rs.Addr()})
	defer c.Close()
	if err := c.HSet(t.Context(), "refcast:meta", "partitions", "16", "layout", "1").Err(); err != nil {
		t.Fatal(err)
	}
}

// TestServeRefusesRedisOfOtherPartitions: a node given --partitions 8 for a
// Redis holding a deployment of 16 exits at once, naming both numbers and
// what to do, instead of serving empty snapshots while ready.
func TestServeRefusesRedisOfOtherPartitions(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{})
	recordDeployment(t, rs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "--listen", testnode.FreeAddr(t),
		"--redis", rs.URL(), "--partitions", "8").CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve with the wrong --partitions did not exit: %s", out)
	}
	if err == nil {
		t.Fatalf("serve with the wrong --partitions exited 0: %s", out)
	}
	for _, want := range []string{"16 partitions", "--partitions 8", "use --partitions 16"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("message does not say %q:\n%s", want, out)
		}
	}
}

// TestServeRedisOfOtherPartitionsLater: a node started before its Redis
// checks the partition count at the first connection: it never becomes
// ready and says why in its log.
func TestServeRedisOfOtherPartitionsLater(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{AOF: true})
	recordDeployment(t, rs)
	rs.Stop()
	n := startLoggedNode(t, bin, "--redis", rs.URL(), "--partitions", "8")
	n.waitReadyz(t, http.StatusServiceUnavailable, 15*time.Second)
	rs.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(n.log(), "holds a deployment with 16 partitions") {
		if time.Now().After(deadline) {
			t.Fatalf("the log never says the Redis holds 16 partitions:\n%s", n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.waitReadyz(t, http.StatusServiceUnavailable, time.Second)
}
