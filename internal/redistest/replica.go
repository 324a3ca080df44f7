package redistest

import (
	"context"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// detachedUser is the user a detached replica authenticates to its master
// as; no master started here has it, so every attempt fails at AUTH.
const detachedUser = "redistest-detached"

// Detach makes a replica lag behind its master for good without telling
// anyone: it keeps its role, its data and its replication offset, but its
// link to the master is closed and every reconnection is refused at AUTH
// (it now authenticates as a user no master has), so writes the master
// acknowledges from now on never reach it. It is the replica a failover
// must not trust blindly: promoted, it rewinds the history.
//
// Stopping the replica's process (SIGSTOP, DEBUG SLEEP) would not do: the
// master's writes wait in the kernel's socket buffer and are applied when
// it runs again. Detach waits until the replica reports its link down.
func (s *Server) Detach() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.conn()
	defer c.Close()
	for _, kv := range [][2]string{{"masteruser", detachedUser}, {"masterauth", detachedUser}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			s.t.Fatalf("redistest: detach %s: config set %s: %v", s.Addr(), kv[0], err)
		}
	}
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "master").Err(); err != nil {
		s.t.Fatalf("redistest: detach %s: client kill type master: %v", s.Addr(), err)
	}
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:down") {
			return
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("redistest: detach %s: link still up: %v %s", s.Addr(), err, info)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Replication returns the fields of the server's INFO replication
// (role, master_repl_offset, master_link_status, ...).
func (s *Server) Replication(ctx context.Context) (map[string]string, error) {
	c := s.conn()
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return nil, fmt.Errorf("info replication on %s: %w", s.Addr(), err)
	}
	out := map[string]string{}
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// conn is a client on the server the caller closes: for helpers called in
// loops, where Client's t.Cleanup would keep every connection open until
// the test ends.
func (s *Server) conn() *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: s.Addr(), Username: s.opts.User, Password: s.opts.Password})
}
