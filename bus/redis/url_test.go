package redis

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/refcast/refcast/bus"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name     string
		url      string
		topo     topology
		addrs    []string
		user     string
		pass     string
		db       int
		master   string
		tls      bool
		redacted string
	}{
		{name: "plain", url: "redis://localhost:6379/0", addrs: []string{"localhost:6379"}, redacted: "redis://localhost:6379/0"},
		{name: "default port and db", url: "redis://r1/3", addrs: []string{"r1:6379"}, db: 3},
		{name: "no path", url: "redis://r1:7000", addrs: []string{"r1:7000"}},
		{name: "password only", url: "redis://:s3cret@r1:6379/1", addrs: []string{"r1:6379"}, pass: "s3cret", db: 1, redacted: "redis://:xxxxx@r1:6379/1"},
		{name: "acl user", url: "redis://refcast:p%40ss@r1:6379", addrs: []string{"r1:6379"}, user: "refcast", pass: "p@ss", redacted: "redis://refcast:xxxxx@r1:6379"},
		{name: "password with @ and comma", url: "redis://u:a@b,c@r1:6379", addrs: []string{"r1:6379"}, user: "u", pass: "a@b,c", redacted: "redis://u:xxxxx@r1:6379"},
		{name: "tls", url: "rediss://u:p@r1:6380/2", addrs: []string{"r1:6380"}, user: "u", pass: "p", db: 2, tls: true},
		{name: "ipv6", url: "redis://[::1]:6379", addrs: []string{"[::1]:6379"}},
		{name: "sentinel", url: "redis-sentinel://u:p@s1:26379,s2:26380/mymaster?db=4", topo: sentinel, addrs: []string{"s1:26379", "s2:26380"}, user: "u", pass: "p", db: 4, master: "mymaster", redacted: "redis-sentinel://u:xxxxx@s1:26379,s2:26380/mymaster?db=4"},
		{name: "sentinel default port", url: "redis-sentinel://s1/m", topo: sentinel, addrs: []string{"s1:26379"}, master: "m"},
		{name: "sentinel tls", url: "rediss-sentinel://s1/m", topo: sentinel, addrs: []string{"s1:26379"}, master: "m", tls: true},
		{name: "cluster", url: "redis-cluster://u:p@h1:7000,h2:7001,h3", topo: cluster, addrs: []string{"h1:7000", "h2:7001", "h3:6379"}, user: "u", pass: "p"},
		{name: "cluster tls", url: "rediss-cluster://h1:7000", topo: cluster, addrs: []string{"h1:7000"}, tls: true},
		{name: "seed list", url: "redis://u:p@h1:7000,redis://h2:7001", topo: cluster, addrs: []string{"h1:7000", "h2:7001"}, user: "u", pass: "p", redacted: "redis://u:xxxxx@h1:7000,redis://h2:7001"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			o := cfg.Options
			if cfg.Topology != tc.topo || !slices.Equal(o.Addrs, tc.addrs) || o.Username != tc.user || o.Password != tc.pass ||
				o.DB != tc.db || o.MasterName != tc.master || (o.TLSConfig != nil) != tc.tls {
				t.Errorf("got topology %d addrs %v user %q pass %q db %d master %q tls %v",
					cfg.Topology, o.Addrs, o.Username, o.Password, o.DB, o.MasterName, o.TLSConfig != nil)
			}
			if tc.redacted != "" && cfg.Redacted != tc.redacted {
				t.Errorf("redacted = %q, want %q", cfg.Redacted, tc.redacted)
			}
			if tc.pass != "" && strings.Contains(cfg.Redacted, tc.pass) {
				t.Errorf("redacted %q contains the password", cfg.Redacted)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	const pw = "Sup3rSecret"
	for _, raw := range []string{
		"",
		"localhost:6379",
		"http://u:" + pw + "@h:1",
		"redis://u:" + pw + "@",
		"redis://u:" + pw + "@h:notaport",
		"redis://u:" + pw + "@h:1/x",
		"redis://u:" + pw + "@h1:1,h2:2",
		"redis://u:" + pw + "@h:1?bogus=1",
		"redis-sentinel://u:" + pw + "@h:1",
		"redis-sentinel://u:" + pw + "@h:1/m?sentinel_password=" + pw + "&x=1",
		"redis-cluster://u:" + pw + "@h:1/2",
		"redis://u:" + pw + "@h:1/1,redis://h2:2",
		"redis://u:" + pw + "@h:1,rediss://h2:2",
		"redis://u:%zz" + pw + "@h:1",
	} {
		_, err := parseURL(raw)
		if err == nil {
			t.Errorf("parseURL(%q) succeeded", raw)
			continue
		}
		if !errors.Is(err, bus.ErrInvalid) {
			t.Errorf("parseURL(%q): %v does not wrap ErrInvalid", raw, err)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("parseURL error leaks the password: %v", err)
		}
	}
}

// unescapeAll is s with every %XX decoded, as the parser sees query keys:
// a password that equals a key the fuzzer wrote is not a leak.
func unescapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func FuzzRedact(f *testing.F) {
	f.Add("redis://u:pw@h:1/0", "pw")
	f.Add("redis-cluster://:pw@h1,h2", "pw")
	f.Add("redis://u:a,b@h:1,redis://h2", "a,b")
	f.Fuzz(func(t *testing.T, prefix, pw string) {
		// Short or digit-free passwords can match the error's own words.
		// Passwords of letters, digits and ",._-", with a letter and a digit, so an error's own
		// escaping (\x10 next to zeros) cannot spell one by accident.
		if len(pw) < 8 || !strings.ContainsAny(pw, "0123456789") || !strings.ContainsAny(strings.ToLower(pw), "abcdefghijklmnopqrstuvwxyz") ||
			strings.IndexFunc(pw, func(r rune) bool {
				return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && !strings.ContainsRune(",._-", r)
			}) >= 0 || strings.ContainsAny(pw, "@/?") || strings.Contains("@h:1/0"+prefix, pw) || strings.Contains(unescapeAll("@h:1/0"+prefix), pw) || strings.Contains("redis://u:@h:1/0xxxxx", pw) {
			return
		}
		raw := "redis://u:" + pw + "@h:1/0"
		if strings.Contains(redact(raw), pw) {
			t.Errorf("redact(%q) = %q keeps the password", raw, redact(raw))
		}
		if _, err := parseURL(raw + prefix); err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("error leaks the password: %v", err)
		}
	})
}
