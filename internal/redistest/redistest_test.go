package redistest_test

import (
	"testing"

	"github.com/refcast/refcast/internal/redistest"
)

func TestRestartKeepsDataWithAOF(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{AOF: true, User: "app", Password: "pw1"})
	ctx := t.Context()
	if err := s.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	s.Kill()
	s.Restart()
	if s.Addr() != addr {
		t.Errorf("restart moved from %s to %s", addr, s.Addr())
	}
	if v, err := s.Client().Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Errorf("after restart k = %q, %v; want v", v, err)
	}
	if want := "redis://app:pw1@" + addr + "/0"; s.URL() != want {
		t.Errorf("URL = %q, want %q", s.URL(), want)
	}
}

func TestRestartLosesDataWithoutAOF(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	ctx := t.Context()
	s.Client().Set(ctx, "k", "v", 0)
	s.Stop()
	s.Restart()
	if n, _ := s.Client().Exists(ctx, "k").Result(); n != 0 {
		t.Error("data survived a restart without persistence")
	}
}

// TestClusterTakeoverFromDetachedReplica: a detached replica promoted by
// Takeover serves its master's slots with what it had before Detach and
// without what the master took after; the old master, still up, becomes
// its replica and drops the difference.
func TestClusterTakeoverFromDetachedReplica(t *testing.T) {
	t.Parallel()
	c := redistest.StartClusterWithReplicas(t, 3)
	if len(c.Replicas) != 3 {
		t.Fatalf("%d replicas, want 3", len(c.Replicas))
	}
	ctx := t.Context()
	const kept, lost = "{k}kept", "{k}lost" // one slot
	i, err := c.Owner(ctx, kept)
	if err != nil {
		t.Fatal(err)
	}
	master, replica := c.Servers[i].Client(), c.Replicas[i]
	if err := master.Set(ctx, kept, "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := master.Do(ctx, "WAIT", 1, 30000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT = %d, %v", n, err)
	}
	replica.Detach()
	if err := master.Set(ctx, lost, "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Takeover(ctx, i); err != nil {
		t.Fatal(err)
	}
	if j, err := c.Owner(ctx, kept); err == nil {
		t.Fatalf("slot still served by master %d after the takeover", j)
	}
	promoted := replica.Client()
	if n, err := promoted.Exists(ctx, kept, lost).Result(); err != nil || n != 1 {
		t.Errorf("the promoted replica has %d of the two keys (%v), want only the one written before Detach", n, err)
	}
	info, err := c.Servers[i].Replication(ctx)
	if err != nil || info["role"] != "slave" {
		t.Errorf("old master: %v %v, want a replica", info, err)
	}
}
