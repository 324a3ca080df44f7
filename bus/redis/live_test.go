package redis_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/bustest"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/internal/redistest"
)

// These tests open the bus through each URL form against real servers:
// Sentinel (with a forced failover), TLS with a private CA, and ACL users
// on the Sentinels. Standalone, ACL users on data nodes and Cluster are in
// redis_test.go.

// feed reads one subscription.
type feed struct {
	sub  bus.Subscription
	last uint64 // last Seq delivered
}

func subscribe(t *testing.T, b *redis.Bus) *feed {
	t.Helper()
	heads, err := b.Heads(t.Context())
	if err != nil {
		t.Fatalf("Heads: %v", err)
	}
	sub, err := b.Subscribe(t.Context(), heads)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { sub.Close() })
	return &feed{sub: sub, last: heads[0].Last}
}

// next returns the next message, checking the sequence has no gap; a
// Reset is returned as is.
func (f *feed) next(t *testing.T, d time.Duration) bus.Message {
	t.Helper()
	select {
	case m, ok := <-f.sub.C():
		if !ok {
			t.Fatal("subscription closed")
		}
		if m.Reset {
			f.last = m.Head.Last
			return m
		}
		for _, e := range m.Events {
			if e.Seq != f.last+1 {
				t.Fatalf("event seq %d after %d: a gap without a reset", e.Seq, f.last)
			}
			f.last = e.Seq
		}
		return m
	case <-time.After(d):
		t.Fatalf("no message within %v", d)
	}
	return bus.Message{}
}

// publishRetry publishes p, retrying while the bus is unavailable (during
// a failover), for at most d.
func publishRetry(t *testing.T, b *redis.Bus, p *bus.Push, d time.Duration) []bus.Event {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		evs, err := b.Publish(t.Context(), p)
		if err == nil {
			return evs
		}
		if !errors.Is(err, bus.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("publish %s: %v", p.ID, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestLiveSentinel(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t, redistest.Options{})
	s := redistest.StartSentinel(t, master, nil, redistest.SentinelOptions{})
	u := s.URL(master)
	if !strings.HasPrefix(u, "redis-sentinel://127.0.0.1:") {
		t.Fatalf("sentinel url %s", u)
	}
	b := open(t, u, redis.Options{Partitions: 1})
	f := subscribe(t, b)
	evs := publishRetry(t, b, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1)), 0)
	if m := f.next(t, 5*time.Second); len(m.Events) != 1 || m.Events[0].PushID != "p1" || evs[0].Seq != 1 {
		t.Fatalf("got %+v, want p1 at seq 1", m)
	}
	// The events went to the master the Sentinel names.
	if keys, err := master.Client().Keys(t.Context(), "*:stream").Result(); err != nil || len(keys) == 0 {
		t.Fatalf("no stream on the master: %v %v", keys, err)
	}
}

// sentinelPerms are the Sentinel ACL rules of a refcast Sentinel user:
// docs/security.md ("Redis ACLs") lists all but &+replica-reconf-done,
// which go-redis subscribes to in the same SUBSCRIBE as +switch-master
// (without it that SUBSCRIBE is refused and the client learns of a
// failover only when its connections to the old master fail).
const sentinelPerms = "+sentinel|get-master-addr-by-name +sentinel|sentinels +sentinel|replicas +subscribe &+switch-master &+replica-reconf-done"

// startSentinelACL starts a master and the given number of replicas
// requiring the ACL user refcast (password data-pw-7), and a Sentinel on
// them that gives the ACL user refcast-sentinel (password sent-pw-9) only
// sentinelPerms. It returns the bus URL using both.
func startSentinelACL(t *testing.T, replicas int) (*redistest.Sentinel, *redistest.Server, []*redistest.Server, string) {
	t.Helper()
	master := redistest.Start(t, redistest.Options{User: "refcast", Password: "data-pw-7"})
	var reps []*redistest.Server
	for range replicas {
		reps = append(reps, redistest.StartReplica(t, master))
	}
	s := redistest.StartSentinel(t, master, reps, redistest.SentinelOptions{
		User: "admin", Password: "admin-pw-1", // the harness's own
		Args: []string{"user refcast-sentinel on >sent-pw-9 resetchannels -@all " + sentinelPerms},
	})
	u := "redis-sentinel://refcast:data-pw-7@" + s.Addr() + "/" + redistest.DefaultMasterName +
		"?sentinel_user=refcast-sentinel&sentinel_password=sent-pw-9"
	return s, master, reps, u
}

// TestLiveSentinelFailover: a subscription and publishes through Sentinel
// survive a forced failover to the replica: events published after it
// arrive, and the sequence either continues without a gap or restarts
// with a Reset, never silently skips. Data nodes and the Sentinel require
// ACL users, the Sentinel's with only the documented permissions.
func TestLiveSentinelFailover(t *testing.T) {
	t.Parallel()
	s, master, reps, u := startSentinelACL(t, 1)
	replica := reps[0]
	b := open(t, u, redis.Options{Partitions: 1, Timeout: time.Second})
	f := subscribe(t, b)
	for i := range 3 {
		publishRetry(t, b, bustest.Push(fmt.Sprintf("before%d", i), "acme/app", "refs/heads/main", bustest.ID(i+1)), 0)
		f.next(t, 5*time.Second)
	}
	// Wait until the replica holds them, so the failover loses nothing.
	if err := master.Client().Do(t.Context(), "WAIT", 1, 5000).Err(); err != nil {
		t.Fatalf("WAIT: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	newMaster, err := s.Failover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newMaster != replica.Addr() {
		t.Fatalf("new master %s, want the replica %s", newMaster, replica.Addr())
	}
	t.Logf("failover to %s took %v", newMaster, time.Since(start))

	after := publishRetry(t, b, bustest.Push("after", "acme/app", "refs/heads/main", bustest.ID(10)), 15*time.Second)
	if after[0].Seq != 4 {
		t.Errorf("first event after the failover at seq %d, want 4 (the replica had everything)", after[0].Seq)
	}
	for {
		m := f.next(t, 15*time.Second)
		if m.Reset {
			t.Logf("reset after failover: %+v", m.Head)
			continue
		}
		if len(m.Events) > 0 && m.Events[len(m.Events)-1].PushID == "after" {
			break
		}
	}
	// The bus never ran anything the documented rules refuse.
	sc := s.Conn()
	defer sc.Close()
	if denied, err := sc.Do(t.Context(), "ACL", "LOG").Slice(); err != nil || len(denied) != 0 {
		t.Errorf("sentinel ACL LOG = %v, %v; want no denials for the documented rules", denied, err)
	}
	// The write landed on the new master.
	if keys, err := replica.Client().Keys(t.Context(), "*:stream").Result(); err != nil || len(keys) == 0 {
		t.Fatalf("no stream on the new master: %v %v", keys, err)
	}
}

// TestLiveSentinelACL: a wrong password, for the Sentinel user or for the
// data nodes' user, fails Open without quoting it.
func TestLiveSentinelACL(t *testing.T) {
	t.Parallel()
	_, _, _, good := startSentinelACL(t, 0)
	b := open(t, good, redis.Options{Partitions: 1})
	f := subscribe(t, b)
	publishRetry(t, b, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1)), 0)
	f.next(t, 5*time.Second)

	for name, bad := range map[string]string{
		"wrong sentinel password": strings.Replace(good, "sent-pw-9", "Wr0ngSentinelPw", 1),
		"wrong data password":     strings.Replace(good, "data-pw-7", "Wr0ngDataPw", 1),
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		b, err := redis.Open(ctx, bad, redis.Options{Partitions: 1, Timeout: time.Second})
		cancel()
		if err == nil {
			b.Close()
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if strings.Contains(err.Error(), "Wr0ng") {
			t.Errorf("%s: error leaks the password: %v", name, err)
		}
		if !strings.Contains(err.Error(), "WRONGPASS") {
			t.Errorf("%s: error does not say the password was refused: %v", name, err)
		}
	}
}

// TestLiveTLS: rediss:// against a TLS-only server verifies the server's
// certificate: against the CA named by tls_ca_file it works; against
// another CA, or the system roots, Open fails naming the certificate;
// there is no way to turn verification off.
func TestLiveTLS(t *testing.T) {
	t.Parallel()
	srv := redistest.StartTLS(t)
	b := open(t, srv.URL(), redis.Options{Partitions: 2})
	f := subscribe(t, b)
	publishRetry(t, b, bustest.Push("p1", "acme/app", "refs/heads/main", bustest.ID(1)), 0)
	if m := f.next(t, 5*time.Second); len(m.Events) != 1 {
		t.Fatalf("got %+v", m)
	}
	if st, err := b.Refs(t.Context(), "acme/app"); err != nil || st.Refs["refs/heads/main"] != bustest.ID(1) {
		t.Fatalf("Refs over TLS = %+v, %v", st, err)
	}

	other := redistest.NewCA(t)
	base := "rediss://" + srv.Addr()
	for _, tc := range []struct {
		name, url string
		want      error  // nil: any error
		text      string // the error mentions it
	}{
		{"another CA", base + "?tls_ca_file=" + url.QueryEscape(other.CAFile), nil, "certificate signed by unknown authority"},
		{"system roots", base, nil, "certificate signed by unknown authority"},
		{"skip verify is no option", base + "?insecure_skip_verify=true", bus.ErrInvalid, "unknown query parameter"},
		{"ca without tls", "redis://" + srv.Addr() + "?tls_ca_file=" + url.QueryEscape(srv.CA.CAFile), bus.ErrInvalid, "needs a TLS scheme"},
		{"missing ca file", base + "?tls_ca_file=" + url.QueryEscape(filepath.Join(t.TempDir(), "nope.pem")), bus.ErrInvalid, "no such file"},
		{"ca file without pem", base + "?tls_ca_file=" + url.QueryEscape(srv.CA.KeyFile), bus.ErrInvalid, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			b, err := redis.Open(ctx, tc.url, redis.Options{Partitions: 1, Timeout: 2 * time.Second})
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("err = %v, want it to mention %q", err, tc.text)
			}
			t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}
