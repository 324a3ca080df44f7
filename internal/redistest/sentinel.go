package redistest

import (
	"context"
	"errors"
	"fmt"
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

// DefaultMasterName is the name Sentinels monitor a master under.
const DefaultMasterName = "mymaster"

// StartReplica starts a redis-server replicating master, with master's
// authentication options, and waits until its link to the master is up.
func StartReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	opts := master.opts
	host, port, _ := strings.Cut(master.Addr(), ":")
	opts.Args = append(append([]string(nil), opts.Args...), "replicaof "+host+" "+port)
	if opts.Password != "" {
		opts.Args = append(opts.Args, "masterauth "+opts.Password)
		if opts.User != "" {
			opts.Args = append(opts.Args, "masteruser "+opts.User)
		}
	}
	r := Start(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c := r.Client()
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return r
		}
		select {
		case <-ctx.Done():
			t.Fatalf("redistest: replica %s never linked to %s: %v %s", r.Addr(), master.Addr(), err, info)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// SentinelOptions configure a Sentinel. The zero value monitors the
// master as DefaultMasterName, with quorum 1, and needs no authentication.
type SentinelOptions struct {
	// MasterName is the monitored master's name (DefaultMasterName).
	MasterName string
	// User and Password make the Sentinel itself require authentication:
	// the default user is disabled and User may do everything.
	User, Password string
	// Args are extra configuration lines ("user NAME on >PW ..." for more
	// users).
	Args []string
}

// Sentinel is one `redis-server --sentinel` process monitoring one master.
type Sentinel struct {
	t    testing.TB
	opts SentinelOptions // set at construction
	dir  string          // set at construction
	port int             // set at construction

	mu   sync.Mutex    // guards cmd and done
	cmd  *exec.Cmd     // nil when not running
	done chan struct{} // closed when cmd has exited
}

// StartSentinel starts a Sentinel on a free port of 127.0.0.1 monitoring
// master (quorum 1, down-after 1 s, failover timeout 10 s), waits until it
// knows the master and every replica in replicas, and kills it in
// t.Cleanup. A master with a password is monitored with its credentials.
func StartSentinel(t testing.TB, master *Server, replicas []*Server, opts SentinelOptions) *Sentinel {
	t.Helper()
	requireBinary(t, "redis-server")
	if opts.MasterName == "" {
		opts.MasterName = DefaultMasterName
	}
	if opts.User != "" && opts.Password == "" {
		t.Fatal("redistest: SentinelOptions.User requires a Password")
	}
	var lastErr error
	for range 5 { // a free port can be taken between probe and bind: retry
		s := &Sentinel{t: t, opts: opts, dir: t.TempDir(), port: freePort(t, false)}
		if lastErr = s.start(master); lastErr == nil {
			t.Cleanup(s.Kill)
			if err := s.waitKnows(master, replicas, 15*time.Second); err != nil {
				t.Fatalf("redistest: %v", err)
			}
			return s
		}
	}
	t.Fatalf("redistest: start sentinel: %v", lastErr)
	return nil
}

func (s *Sentinel) config(master *Server) string {
	var b strings.Builder
	name := s.opts.MasterName
	host, port, _ := strings.Cut(master.Addr(), ":")
	fmt.Fprintf(&b, "port %d\nbind 127.0.0.1\ndir %s\ndaemonize no\nprotected-mode no\n", s.port, s.dir)
	fmt.Fprintf(&b, "logfile %s\n", filepath.Join(s.dir, "sentinel.log"))
	fmt.Fprintf(&b, "sentinel monitor %s %s %s 1\n", name, host, port)
	fmt.Fprintf(&b, "sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n", name, name, name)
	if master.opts.Password != "" {
		fmt.Fprintf(&b, "sentinel auth-pass %s %s\n", name, master.opts.Password)
		if master.opts.User != "" {
			fmt.Fprintf(&b, "sentinel auth-user %s %s\n", name, master.opts.User)
		}
	}
	if s.opts.User != "" {
		fmt.Fprintf(&b, "user default off\nuser %s on >%s ~* &* +@all\n", s.opts.User, s.opts.Password)
	}
	for _, a := range s.opts.Args {
		b.WriteString(a + "\n")
	}
	return b.String()
}

func (s *Sentinel) start(master *Server) error {
	// Sentinel rewrites its configuration file, so it must be its own.
	conf := filepath.Join(s.dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(s.config(master)), 0o600); err != nil {
		return err
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	proc.DieWithParent(cmd)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	c := s.Client()
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			deadline = time.Time{}
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.Kill()
	log, _ := os.ReadFile(filepath.Join(s.dir, "sentinel.log"))
	return fmt.Errorf("sentinel on %s not ready: %w; output:\n%s\nlog:\n%s", s.Addr(), err, tail(out.String(), 2000), tail(string(log), 2000))
}

// waitKnows waits until the Sentinel names master as the master and lists
// every replica with a working link.
func (s *Sentinel) waitKnows(master *Server, replicas []*Server, d time.Duration) error {
	c := s.Client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var last string
	for {
		addr, err := c.GetMasterAddrByName(ctx, s.opts.MasterName).Result()
		if err == nil && len(addr) == 2 && addr[0]+":"+addr[1] == master.Addr() {
			reps, err := c.Replicas(ctx, s.opts.MasterName).Result()
			known := 0
			for _, r := range reps {
				for _, want := range replicas {
					if r["ip"]+":"+r["port"] == want.Addr() && r["flags"] == "slave" && r["master-link-status"] == "ok" {
						known++
					}
				}
			}
			if err == nil && known == len(replicas) {
				return nil
			}
			last = fmt.Sprintf("replicas %v, %v", reps, err)
		} else {
			last = fmt.Sprintf("master %v, %v", addr, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sentinel %s does not know %s and %d replica(s): %s", s.Addr(), master.Addr(), len(replicas), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Addr is the Sentinel's host:port.
func (s *Sentinel) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is redis-sentinel://[user:password@]addr/MASTER[?sentinel_user=..
// &sentinel_password=..] for bus/redis.Open, with master's credentials for
// the data nodes and the Sentinel's own in the query.
func (s *Sentinel) URL(master *Server) string {
	u := url.URL{Scheme: "redis-sentinel", Host: s.Addr(), Path: "/" + s.opts.MasterName}
	switch {
	case master.opts.User != "":
		u.User = url.UserPassword(master.opts.User, master.opts.Password)
	case master.opts.Password != "":
		u.User = url.UserPassword("", master.opts.Password)
	}
	if s.opts.User != "" {
		u.RawQuery = url.Values{"sentinel_user": {s.opts.User}, "sentinel_password": {s.opts.Password}}.Encode()
	}
	return u.String()
}

// Client returns a new Sentinel client authenticated as the Sentinel's
// user; the caller closes it.
func (s *Sentinel) Client() *goredis.SentinelClient {
	return goredis.NewSentinelClient(&goredis.Options{Addr: s.Addr(), Username: s.opts.User, Password: s.opts.Password, MaxRetries: -1, DialTimeout: time.Second})
}

// Conn returns a plain client on the Sentinel, authenticated as its user,
// for commands SentinelClient lacks (ACL LOG); the caller closes it.
func (s *Sentinel) Conn() *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: s.Addr(), Username: s.opts.User, Password: s.opts.Password})
}

// Failover forces a failover (SENTINEL FAILOVER) and waits until the
// Sentinel names a new master (it does once the promotion is confirmed),
// returning its host:port.
func (s *Sentinel) Failover(ctx context.Context) (string, error) {
	c := s.Client()
	defer c.Close()
	old, err := c.GetMasterAddrByName(ctx, s.opts.MasterName).Result()
	if err != nil {
		return "", fmt.Errorf("sentinel get-master-addr-by-name: %w", err)
	}
	if err := c.Failover(ctx, s.opts.MasterName).Err(); err != nil {
		return "", fmt.Errorf("sentinel failover: %w", err)
	}
	for {
		addr, err := c.GetMasterAddrByName(ctx, s.opts.MasterName).Result()
		if err == nil && len(addr) == 2 && (addr[0] != old[0] || addr[1] != old[1]) {
			return addr[0] + ":" + addr[1], nil
		}
		select {
		case <-ctx.Done():
			return "", errors.Join(fmt.Errorf("failover from %v did not finish: %w", old, ctx.Err()), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill kills the Sentinel (SIGKILL) and waits for it. No-op when not
// running.
func (s *Sentinel) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}
