package main

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/internal/redistest"
	"github.com/refcast/refcast/internal/testnode"
)

// TestServeWaitsForRedis: a node started while its Redis is down runs,
// answers /healthz 200 and /readyz 503 (so a balancer sends it nothing),
// says why in its log, and becomes ready and carries events once Redis
// comes up, without a restart.
func TestServeWaitsForRedis(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{})
	rs.Stop()
	n := startLoggedNode(t, bin, "--redis", rs.URL(), "--publish-token", wtToken)
	n.waitReadyz(t, http.StatusServiceUnavailable, 15*time.Second)
	res, err := http.Get(n.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %d while Redis is down, want 200 (the process is alive)", res.StatusCode)
	}
	if !strings.Contains(n.log(), "Redis is not reachable yet") {
		t.Errorf("the log does not say why the node is not ready:\n%s", n.log())
	}

	rs.Restart()
	n.waitReadyz(t, http.StatusOK, 30*time.Second)
	s := testnode.Subscribe(t, n.url+"/v1/events?repo=acme/app", nil)
	defer s.Close()
	s.Next(t, 10*time.Second, "hello")
	wtPublish(t, n.url, "acme/app", "refs/heads/main")
	if f := s.Next(t, 10*time.Second, "ref"); !strings.Contains(f.Data, `"refs/heads/main"`) {
		t.Fatalf("got %+v", f)
	}
}

// TestServeRefusesWrongRedisPassword: a Redis that answers but refuses the
// credentials is a configuration error, not an outage: serve exits at once
// with a message that names --redis and does not contain the password.
func TestServeRefusesWrongRedisPassword(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	rs := redistest.Start(t, redistest.Options{Password: "the-right-one"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "--listen", testnode.FreeAddr(t),
		"--redis", "redis://:wrong-pw-1234@"+rs.Addr()).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve with a wrong Redis password did not exit: %s", out)
	}
	if err == nil {
		t.Fatalf("serve with a wrong Redis password exited 0: %s", out)
	}
	if !strings.Contains(string(out), "--redis") || strings.Contains(string(out), "wrong-pw-1234") {
		t.Fatalf("message must name --redis and hide the password:\n%s", out)
	}
}
