package redis

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/refcast/refcast/bus"
)

// topology says which kind of client a URL asks for.
type topology int

const (
	standalone topology = iota
	sentinel
	cluster
)

// config is a parsed URL: what to connect to and how.
type config struct {
	Topology topology
	Options  goredis.UniversalOptions
	// Redacted is the URL with its password replaced, for errors and logs.
	Redacted string
	// CAFile is the tls_ca_file query parameter: a PEM file of the CAs
	// that verify the servers' certificates instead of the system roots.
	// Read by loadCA, not by the parser.
	CAFile string
}

// maxCAFile bounds what loadCA reads: a CA bundle is a few kilobytes.
const maxCAFile = 1 << 20

// loadCA reads CAFile, when set, into the TLS configuration's roots.
// Certificates are always verified: there is no option to skip it.
func (c *config) loadCA() error {
	if c.CAFile == "" {
		return nil
	}
	f, err := os.Open(c.CAFile)
	if err != nil {
		return fmt.Errorf("redis bus: %w: tls_ca_file: %w", bus.ErrInvalid, err)
	}
	defer f.Close()
	pem, err := io.ReadAll(io.LimitReader(f, maxCAFile))
	if err != nil {
		return fmt.Errorf("redis bus: %w: tls_ca_file: read %s: %w", bus.ErrInvalid, c.CAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("redis bus: %w: tls_ca_file: no PEM certificate in %s", bus.ErrInvalid, c.CAFile)
	}
	c.Options.TLSConfig.RootCAs = pool
	return nil
}

func (c *config) client() goredis.UniversalClient {
	switch c.Topology {
	case sentinel:
		return goredis.NewFailoverClient(c.Options.Failover())
	case cluster:
		return goredis.NewClusterClient(c.Options.Cluster())
	}
	return goredis.NewClient(c.Options.Simple())
}

// parseURL understands:
//
//	redis://[user:pass@]host[:port][/db]                  standalone
//	rediss://...                                          standalone over TLS
//	redis-sentinel://[user:pass@]h1:p1,h2:p2/MASTER[?db=N] Sentinel (rediss-sentinel: TLS)
//	redis-cluster://[user:pass@]h1:p1,h2:p2               Cluster seeds (rediss-cluster: TLS)
//	redis://h1:p1,redis://h2:p2                           Cluster seeds too
//
// user:pass authenticate to the data nodes (user may be empty, or an ACL
// user); sentinel_user and sentinel_password query parameters authenticate
// to Sentinels. With TLS, the query parameter tls_ca_file names a PEM file
// of CAs to verify the servers with instead of the system roots. Errors
// never contain the password.
func parseURL(raw string) (*config, error) {
	redacted := redact(raw)
	cfg, err := parseURLRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("redis bus: %w: url %s: %s", bus.ErrInvalid, redacted, err)
	}
	cfg.Redacted = redacted
	return cfg, nil
}

// urlError is a reason that never quotes the URL itself.
type urlError string

func (e urlError) Error() string { return string(e) }

func parseURLRaw(raw string) (*config, error) {
	if strings.Count(raw, "://") > 1 {
		return parseSeedList(raw)
	}
	return parseOne(raw)
}

func parseOne(raw string) (*config, error) {
	u, err := splitURL(raw)
	if err != nil {
		return nil, err
	}
	cfg := &config{}
	o := &cfg.Options
	o.Username, o.Password = u.user, u.pass
	tlsOn := false
	switch u.scheme {
	case "redis", "rediss":
		tlsOn = u.scheme == "rediss"
		if len(u.hosts) > 1 {
			return nil, urlError("several hosts: use redis-cluster:// or redis-sentinel://")
		}
		if u.path != "" {
			db, err := strconv.Atoi(u.path)
			if err != nil || db < 0 {
				return nil, urlError("database must be a non-negative number")
			}
			o.DB = db
		}
	case "redis-sentinel", "rediss-sentinel":
		cfg.Topology = sentinel
		tlsOn = u.scheme == "rediss-sentinel"
		if u.path == "" || strings.Contains(u.path, "/") {
			return nil, urlError("sentinel url needs the master name as its path")
		}
		o.MasterName = u.path
	case "redis-cluster", "rediss-cluster":
		cfg.Topology = cluster
		tlsOn = u.scheme == "rediss-cluster"
		if u.path != "" {
			return nil, urlError("cluster url takes no path (a cluster has only database 0)")
		}
	case "":
		return nil, urlError("missing scheme (redis://, rediss://, redis-sentinel://, redis-cluster://)")
	default:
		return nil, urlError(fmt.Sprintf("unknown scheme %q", bus.Clip(u.scheme, 32)))
	}
	defPort := "6379"
	if cfg.Topology == sentinel {
		defPort = "26379"
	}
	for _, h := range u.hosts {
		addr, err := hostPort(h, defPort)
		if err != nil {
			return nil, err
		}
		o.Addrs = append(o.Addrs, addr)
	}
	for k, vs := range u.query {
		v := vs[len(vs)-1]
		switch {
		case k == "db" && cfg.Topology != cluster:
			db, err := strconv.Atoi(v)
			if err != nil || db < 0 {
				return nil, urlError("db must be a non-negative number")
			}
			o.DB = db
		case k == "sentinel_user" && cfg.Topology == sentinel:
			o.SentinelUsername = v
		case k == "sentinel_password" && cfg.Topology == sentinel:
			o.SentinelPassword = v
		case k == "tls_ca_file":
			if !tlsOn {
				return nil, urlError("tls_ca_file needs a TLS scheme (rediss://, rediss-sentinel://, rediss-cluster://)")
			}
			if v == "" {
				return nil, urlError("tls_ca_file is empty")
			}
			cfg.CAFile = v
		default:
			return nil, urlError(fmt.Sprintf("unknown query parameter %q", bus.Clip(k, 32)))
		}
	}
	if tlsOn {
		// ServerName is left empty: crypto/tls takes it from each address
		// dialled, which is right for every node of a cluster.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

// parseSeedList parses "redis://h1:p1,redis://h2:p2" as cluster seeds. The
// credentials and scheme of the first apply to all.
func parseSeedList(raw string) (*config, error) {
	var parts []string
	for p := range strings.SplitSeq(raw, ",") {
		if len(parts) > 0 && !startsURL(p) { // a comma inside a password
			parts[len(parts)-1] += "," + p
			continue
		}
		parts = append(parts, p)
	}
	cfg := &config{Topology: cluster}
	o := &cfg.Options
	for i, p := range parts {
		if strings.Count(p, "://") != 1 {
			return nil, fmt.Errorf("seed %d: %w", i+1, urlError("malformed url in seed list"))
		}
		c, err := parseOne(p)
		if err != nil {
			return nil, fmt.Errorf("seed %d: %w", i+1, err)
		}
		if c.Topology != standalone {
			return nil, urlError("a seed list takes only redis:// or rediss:// urls")
		}
		if c.Options.DB != 0 {
			return nil, urlError("cluster seeds take no database (a cluster has only database 0)")
		}
		if i == 0 {
			o.Username, o.Password, o.TLSConfig = c.Options.Username, c.Options.Password, c.Options.TLSConfig
			cfg.CAFile = c.CAFile
		} else if (c.Options.TLSConfig != nil) != (o.TLSConfig != nil) {
			return nil, urlError("seeds mix redis:// and rediss://")
		}
		o.Addrs = append(o.Addrs, c.Options.Addrs...)
	}
	return cfg, nil
}

type urlParts struct {
	scheme, user, pass, path string
	hosts                    []string
	query                    url.Values
}

// splitURL splits by hand, because net/url rejects host lists and quotes
// the whole URL (password included) in its errors.
func splitURL(raw string) (urlParts, error) {
	var u urlParts
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return u, urlError("missing scheme (redis://, rediss://, redis-sentinel://, redis-cluster://)")
	}
	u.scheme = strings.ToLower(scheme)
	rest, q, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	u.path = strings.TrimSuffix(path, "/")
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		info := authority[:i]
		authority = authority[i+1:]
		user, pass, hasPass := strings.Cut(info, ":")
		var err error
		if u.user, err = url.PathUnescape(user); err != nil {
			return u, urlError("bad escape in user name")
		}
		if hasPass {
			if u.pass, err = url.PathUnescape(pass); err != nil {
				return u, urlError("bad escape in password")
			}
		}
	}
	if authority == "" {
		return u, urlError("missing host")
	}
	u.hosts = strings.Split(authority, ",")
	var err error
	if u.query, err = url.ParseQuery(q); err != nil {
		return u, urlError("bad query string")
	}
	return u, nil
}

func hostPort(h, defPort string) (string, error) {
	if h == "" {
		return "", urlError("empty host in list")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil { // no port
		host, port = strings.Trim(h, "[]"), defPort
	}
	if host == "" {
		return "", urlError("empty host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", urlError("bad port: want a number from 1 to 65535") // never quoted: a mis-split url can put a password there
	}
	return net.JoinHostPort(host, port), nil
}

// startsURL reports whether s begins with a scheme and "://": only such a
// piece after a comma starts another URL of a seed list.
func startsURL(s string) bool {
	i := strings.Index(s, "://")
	if i <= 0 {
		return false
	}
	for j := 0; j < i; j++ {
		c := s[j]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (j == 0 || (c < '0' || c > '9') && c != '+' && c != '-' && c != '.') {
			return false
		}
	}
	return true
}

// redact replaces the password of every URL in raw with "xxxxx".
func redact(raw string) string {
	var parts, out []string
	for p := range strings.SplitSeq(raw, ",") {
		if len(parts) > 0 && !startsURL(p) { // a host list, or a comma in a password
			parts[len(parts)-1] += "," + p
			continue
		}
		parts = append(parts, p)
	}
	for _, p := range parts {
		scheme, rest, ok := strings.Cut(p, "://")
		if !ok {
			out = append(out, p)
			continue
		}
		authEnd := len(rest)
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			authEnd = i
		}
		at := strings.LastIndexByte(rest[:authEnd], '@')
		if at < 0 {
			out = append(out, p)
			continue
		}
		user, _, hasPass := strings.Cut(rest[:at], ":")
		if hasPass {
			user += ":xxxxx"
		}
		out = append(out, scheme+"://"+user+rest[at:])
	}
	s := strings.Join(out, ",")
	// Drop query values that may be secrets.
	if i := strings.Index(s, "sentinel_password="); i >= 0 {
		end := strings.IndexByte(s[i:], '&')
		if end < 0 {
			end = len(s) - i
		}
		s = s[:i] + "sentinel_password=xxxxx" + s[i+end:]
	}
	return s
}
