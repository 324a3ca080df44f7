package deploy

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// serveNode returns the one service of a compose file that runs refcast
// serve, and its --redis URL.
func serveNode(t *testing.T, c composeFile) (composeService, redisURL) {
	t.Helper()
	var found []string
	var node composeService
	for name, s := range c.Services {
		if len(s.Command) > 0 && s.Command[0] == "serve" {
			found = append(found, name)
			node = s
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one refcast serve service, have %v", found)
	}
	v, ok := flagValue(node.Command, "redis")
	if !ok {
		t.Fatalf("refcast node has no --redis: %q", node.Command)
	}
	u, err := parseRedisURL(v)
	if err != nil {
		t.Fatal(err)
	}
	if node.Healthcheck == nil || !healthcheckHitsProbe(node.Healthcheck.Test) {
		t.Error("refcast node healthcheck must hit /healthz or /readyz")
	}
	return node, u
}

func TestRedisSentinelExample(t *testing.T) {
	c := loadCompose(t, "deploy/redis/sentinel/compose.yml")
	_, u := serveNode(t, c)
	if u.Scheme != "redis-sentinel" {
		t.Fatalf("scheme %q, want redis-sentinel", u.Scheme)
	}
	if len(u.Hosts) < 3 {
		t.Errorf("%d sentinels in the URL, want at least 3 (a quorum survives one loss)", len(u.Hosts))
	}
	for _, h := range u.Hosts {
		name, port, _ := strings.Cut(h, ":")
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("URL names %s, which is not a service", name)
			continue
		}
		script := strings.Join(s.Command, " ")
		if port != "26379" || !strings.Contains(script, "redis-sentinel") || !strings.Contains(script, "port "+port) {
			t.Errorf("%s: not a sentinel on port %s", h, port)
		}
		m := regexp.MustCompile(`sentinel monitor (\S+) (\S+) (\d+) (\d+)`).FindStringSubmatch(script)
		if m == nil {
			t.Errorf("%s: no sentinel monitor line", name)
			continue
		}
		if m[1] != u.Path {
			t.Errorf("%s monitors %q, the URL asks for master %q", name, m[1], u.Path)
		}
		if _, ok := c.Services[m[2]]; !ok {
			t.Errorf("%s monitors %s, which is not a service", name, m[2])
		}
	}
	for name, s := range c.Services {
		if len(s.Command) > 0 && s.Command[0] == "redis-server" {
			if v, _ := flagValue(s.Command, "appendonly"); v != "yes" {
				t.Errorf("%s: want --appendonly yes", name)
			}
		}
	}
}

func TestRedisClusterExample(t *testing.T) {
	c := loadCompose(t, "deploy/redis/cluster/compose.yml")
	_, u := serveNode(t, c)
	if u.Scheme != "redis-cluster" {
		t.Fatalf("scheme %q, want redis-cluster", u.Scheme)
	}
	// Cluster members: services with --cluster-enabled yes, by address.
	members := map[string]string{}
	for name, s := range c.Services {
		if v, _ := flagValue(s.Command, "cluster-enabled"); v == "yes" {
			for _, ip := range s.Networks {
				members[ip+":6379"] = name
			}
		}
	}
	if len(members) < 6 {
		t.Fatalf("%d cluster nodes with fixed addresses, want 6 (3 primaries, 3 replicas)", len(members))
	}
	for _, h := range u.Hosts {
		if members[h] == "" {
			t.Errorf("URL seed %s is not a cluster node", h)
		}
	}
	initCmd := strings.Join(c.Services["cluster-init"].Command, " ")
	for addr := range members {
		if !strings.Contains(initCmd, addr) {
			t.Errorf("cluster-init does not create the cluster with %s", addr)
		}
	}
	if !strings.Contains(initCmd, "--cluster-replicas 1") {
		t.Error("cluster-init: want --cluster-replicas 1")
	}
}

// TestOperationsDoc checks docs/operations.md covers what operators watch
// and touch: every metric, endpoint and the topics of its sections.
func TestOperationsDoc(t *testing.T) {
	doc := string(readFile(t, "docs/operations.md"))
	metrics := []string{
		"refcast_connections", "refcast_bus_up", "refcast_events_published_total",
		"refcast_events_received_total", "refcast_deliveries_total", "refcast_fanout_latency_seconds",
		"refcast_evictions_total", "refcast_bus_reconnects_total", "refcast_replays_total",
		"refcast_resets_total", "refcast_hook_spool_depth",
	}
	endpoints := []string{"/v1/events", "/v1/refs", "/v1/publish", "/healthz", "/readyz", "/metrics"}
	topics := []string{"docker compose up", "somaxconn", "ip_local_port_range", "tcp_keepalive", "fs.file-max",
		"ulimit -n", "LimitNOFILE", "--drain", "appendonly", "reset", "redis-sentinel://", "redis-cluster://"}
	for _, want := range slices.Concat(metrics, endpoints, topics) {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/operations.md does not mention %s", want)
		}
	}
}
