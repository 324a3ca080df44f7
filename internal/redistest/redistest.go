// Package redistest starts real redis-server processes for tests: a
// standalone server (with or without AOF, with a password or an ACL user)
// that can be stopped, killed and restarted on the same port and data
// directory, replicas and Sentinels, and a small Redis Cluster of masters,
// with or without a replica each.
//
// It is for tests only: every process lives in t.TempDir() and is stopped by
// t.Cleanup. It is not a way to run Redis in production.
//
// When redis-server (or, for clusters, redis-cli) is not on PATH, the test
// is skipped with a loud reason, except under CI=true where it fails: CI must
// not silently skip the Redis tests.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/refcast/refcast/internal/proc"
)

// Options configure a Server. The zero value is a server without
// persistence or authentication.
type Options struct {
	// AOF turns on the append-only file with appendfsync always, so a
	// killed server loses nothing that it acknowledged.
	AOF bool
	// Password requires authentication: for the default user, or for User
	// when set (the default user is then disabled).
	Password string
	// User is an ACL user with all permissions; requires Password.
	User string
	// Args are extra configuration lines ("maxmemory 10mb").
	Args []string

	cluster bool
}

// Server is one redis-server process. Its methods are safe for concurrent
// use; they fail the test on error.
type Server struct {
	t    testing.TB
	opts Options
	dir  string // set at construction
	port int    // set at construction; kept across Restart

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd  // nil when not running
}

// Start starts a redis-server on a free port of 127.0.0.1 with its data in
// a fresh t.TempDir(), waits until it answers PING, and stops it in
// t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	requireBinary(t, "redis-server")
	if opts.User != "" && opts.Password == "" {
		t.Fatal("redistest: Options.User requires a Password")
	}
	var lastErr error
	for range 5 { // a free port can be taken between probe and bind: retry
		s := &Server{t: t, opts: opts, dir: t.TempDir(), port: freePort(t, opts.cluster)}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Kill)
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

func requireBinary(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		msg := fmt.Sprintf("redistest: %s not found in PATH (apt-get install redis-server); REDIS TESTS NOT RUN", name)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// freePort finds a port free on 127.0.0.1; for a cluster node the cluster
// bus port (port+10000) must be free too.
func freePort(t testing.TB, cluster bool) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !cluster {
			l.Close()
			return port
		}
		if port+10000 <= 65535 {
			if l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000)); err == nil {
				l2.Close()
				l.Close()
				return port
			}
		}
		l.Close()
	}
	t.Fatal("redistest: no free port pair for a cluster node")
	return 0
}

func (s *Server) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "port %d\nbind 127.0.0.1\ndir %s\ndaemonize no\nprotected-mode no\n", s.port, s.dir)
	fmt.Fprintf(&b, "logfile %s\nsave \"\"\n", filepath.Join(s.dir, "redis.log"))
	// A replica's full sync starts at once, not after the 5 s Redis waits
	// by default for more replicas to share a diskless transfer: every
	// replica started here, and every old master a failover demotes, syncs.
	b.WriteString("repl-diskless-sync-delay 0\n")
	if s.opts.AOF {
		b.WriteString("appendonly yes\nappendfsync always\n")
	} else {
		b.WriteString("appendonly no\n")
	}
	switch {
	case s.opts.User != "":
		fmt.Fprintf(&b, "user default off\nuser %s on >%s ~* &* +@all\n", s.opts.User, s.opts.Password)
	case s.opts.Password != "":
		fmt.Fprintf(&b, "requirepass %s\n", s.opts.Password)
	}
	if s.opts.cluster {
		b.WriteString("cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n")
	}
	for _, a := range s.opts.Args {
		b.WriteString(a + "\n")
	}
	return b.String()
}

func (s *Server) start() error {
	conf := filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(conf, []byte(s.config()), 0o600); err != nil {
		return err
	}
	cmd := exec.Command("redis-server", conf)
	proc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	if err := s.waitReady(10 * time.Second); err != nil {
		s.Kill()
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("%w; log:\n%s", err, tail(string(log), 2000))
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (s *Server) waitReady(d time.Duration) error {
	c := goredis.NewClient(&goredis.Options{Addr: s.Addr(), Username: s.opts.User, Password: s.opts.Password, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s not ready after %v: %w", s.Addr(), d, err)
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is redis://[user:password@]127.0.0.1:port/0, for Open-style
// configuration.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr(), Path: "/0"}
	switch {
	case s.opts.User != "":
		u.User = url.UserPassword(s.opts.User, s.opts.Password)
	case s.opts.Password != "":
		u.User = url.UserPassword("", s.opts.Password)
	}
	return u.String()
}

// Dir is the server's data directory.
func (s *Server) Dir() string { return s.dir }

// Client returns a new client authenticated as the server's user, closed in
// t.Cleanup.
func (s *Server) Client() *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: s.Addr(), Username: s.opts.User, Password: s.opts.Password})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Stop shuts the server down gracefully (SIGTERM: with AOF on, everything is
// on disk) and waits for the process to exit. No-op when not running.
func (s *Server) Stop() { s.signal(os.Interrupt) }

// Kill kills the server (SIGKILL) and waits for the process to exit. No-op
// when not running.
func (s *Server) Kill() { s.signal(os.Kill) }

func (s *Server) signal(sig os.Signal) {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	_ = cmd.Wait()
}

func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Restart kills the server if it runs, then starts it again on the same
// port with the same data directory and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	for range 50 { // the port may linger briefly
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart redis-server on %s: %v", s.Addr(), err)
}

// Cluster is a Redis Cluster of masters, with or without a replica each.
type Cluster struct {
	// Servers are the masters, each owning a share of the slots.
	Servers []*Server
	// Replicas[i], when there are replicas, replicates Servers[i] (until a
	// failover swaps their roles: the fields keep the order of creation).
	Replicas []*Server
}

// StartCluster starts n >= 3 cluster-enabled servers, joins them with
// `redis-cli --cluster create` and waits until every node reports
// cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	requireBinary(t, "redis-server")
	requireBinary(t, "redis-cli")
	if n < 3 {
		t.Fatal("redistest: a cluster needs at least 3 masters")
	}
	c := &Cluster{}
	args := []string{"--cluster", "create"}
	for range n {
		s := Start(t, Options{cluster: true})
		c.Servers = append(c.Servers, s)
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitOK(ctx); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return c
}

// StartClusterWithReplicas is StartCluster with one replica per master:
// each replica joins with CLUSTER MEET and CLUSTER REPLICATE, and the
// cluster is returned once every replica's link to its master is up and
// every node knows all 2n nodes.
func StartClusterWithReplicas(t testing.TB, n int) *Cluster {
	t.Helper()
	c := StartCluster(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, m := range c.Servers {
		r := Start(t, Options{cluster: true})
		if err := joinAsReplica(ctx, r, m); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		c.Replicas = append(c.Replicas, r)
	}
	if err := c.waitOK(ctx); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return c
}

// joinAsReplica makes the cluster node r a replica of the master m and
// waits until its replication link is up.
func joinAsReplica(ctx context.Context, r, m *Server) error {
	mc, rc := m.conn(), r.conn()
	defer mc.Close()
	defer rc.Close()
	id, err := mc.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return fmt.Errorf("cluster myid on %s: %w", m.Addr(), err)
	}
	host, port, _ := strings.Cut(m.Addr(), ":")
	if err := rc.ClusterMeet(ctx, host, port).Err(); err != nil {
		return fmt.Errorf("cluster meet %s from %s: %w", m.Addr(), r.Addr(), err)
	}
	// REPLICATE fails with "Unknown node" until the handshake is done.
	for {
		err = rc.ClusterReplicate(ctx, id).Err()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster replicate %s on %s: %w", id, r.Addr(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for {
		info, err := r.Replication(ctx)
		if err == nil && info["master_link_status"] == "up" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replica %s never linked to %s: %v %v", r.Addr(), m.Addr(), err, info)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitOK waits until every node, masters and replicas, reports
// cluster_state:ok and knows all of them.
func (c *Cluster) waitOK(ctx context.Context) error {
	all := append(append([]*Server(nil), c.Servers...), c.Replicas...)
	for _, s := range all {
		rc := goredis.NewClient(&goredis.Options{Addr: s.Addr()})
		for {
			info, err := rc.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(all))) {
				break
			}
			select {
			case <-ctx.Done():
				rc.Close()
				return errors.Join(fmt.Errorf("cluster on %s not ok: %w", s.Addr(), ctx.Err()), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		rc.Close()
	}
	return nil
}

// Addrs are the masters' host:port, usable as cluster seeds.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		out[i] = s.Addr()
	}
	return out
}

// URL is redis-cluster://h1:p1,h2:p2,... listing every master as a seed.
func (c *Cluster) URL() string { return "redis-cluster://" + strings.Join(c.Addrs(), ",") }

// Owner returns i such that Servers[i] serves key's slot now.
func (c *Cluster) Owner(ctx context.Context, key string) (int, error) {
	rc := c.Servers[0].conn()
	defer rc.Close()
	slot, err := rc.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return 0, fmt.Errorf("cluster keyslot %s: %w", key, err)
	}
	shards, err := rc.ClusterShards(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("cluster shards: %w", err)
	}
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if r.Start <= slot && slot <= r.End {
				addr := shardMaster(sh)
				for i, s := range c.Servers {
					if addr == s.Addr() {
						return i, nil
					}
				}
				return 0, fmt.Errorf("slot %d of %s is served by %q, not a master of Servers", slot, key, addr)
			}
		}
	}
	return 0, fmt.Errorf("slot %d of %s is not served", slot, key)
}

// shardMaster is the host:port of a shard's master ("" if it lists none).
func shardMaster(sh goredis.ClusterShard) string {
	for _, n := range sh.Nodes {
		if n.Role == "master" {
			return net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
		}
	}
	return ""
}

// Takeover promotes Replicas[i] with CLUSTER FAILOVER TAKEOVER: the
// replica takes its master's slots under a new config epoch without the
// master's agreement, the other masters' votes, or any check of how far
// behind it is. It returns once every running node names Replicas[i] as
// the owner of all the slots Servers[i] had and, if Servers[i] still runs,
// once Servers[i] is Replicas[i]'s replica with its link up: what it held
// and the replica did not is then gone. Servers and Replicas keep their
// order.
func (c *Cluster) Takeover(ctx context.Context, i int) error {
	old, promoted := c.Servers[i], c.Replicas[i]
	pc := promoted.conn()
	defer pc.Close()
	if err := pc.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err(); err != nil {
		return fmt.Errorf("cluster failover takeover on %s: %w", promoted.Addr(), err)
	}
	var running []*Server
	for _, s := range append(append([]*Server(nil), c.Servers...), c.Replicas...) {
		if s.running() {
			running = append(running, s)
		}
	}
	for _, s := range running {
		rc := s.conn()
		err := waitFor(ctx, func() (bool, string) {
			shards, err := rc.ClusterShards(ctx).Result()
			if err != nil {
				return false, err.Error()
			}
			mine := false
			for _, sh := range shards {
				switch m := shardMaster(sh); {
				case len(sh.Slots) == 0:
				case m == old.Addr():
					return false, fmt.Sprintf("%s still serves slots %v", old.Addr(), sh.Slots)
				case m == promoted.Addr():
					mine = true
				}
			}
			return mine, fmt.Sprintf("%s serves no slot", promoted.Addr())
		})
		rc.Close()
		if err != nil {
			return fmt.Errorf("takeover by %s, as %s sees it: %w", promoted.Addr(), s.Addr(), err)
		}
	}
	if !old.running() {
		return nil
	}
	host, port, _ := strings.Cut(promoted.Addr(), ":")
	return waitFor(ctx, func() (bool, string) {
		info, err := old.Replication(ctx)
		if err != nil {
			return false, err.Error()
		}
		ok := info["role"] == "slave" && info["master_host"] == host && info["master_port"] == port && info["master_link_status"] == "up"
		return ok, fmt.Sprintf("old master %s: role %s of %s:%s, link %s", old.Addr(), info["role"], info["master_host"], info["master_port"], info["master_link_status"])
	})
}

// waitFor polls cond every 20 ms until it holds or ctx ends; the error
// then carries cond's last word.
func waitFor(ctx context.Context, cond func() (bool, string)) error {
	for {
		ok, last := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
