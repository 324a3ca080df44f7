package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unit is a parsed systemd unit: section, then key, then values in order.
type unit map[string]map[string][]string

func loadUnit(t *testing.T) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(readFile(t, "deploy/refcast.service"))))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				t.Fatalf("refcast.service: bad line %q", l)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// get returns the last value of key (systemd's rule for single values).
func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// unitEnvironment returns the unit's Environment= assignments.
func unitEnvironment(u unit) map[string]string {
	out := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(strings.Trim(kv, `"`), "=")
			out[k] = v
		}
	}
	return out
}

// parseSystemdSeconds parses the time spans used here: "45s", "2min",
// "1min 30s" or a bare number of seconds.
func parseSystemdSeconds(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	s = strings.ReplaceAll(strings.ReplaceAll(s, "min", "m"), " ", "")
	return time.ParseDuration(s)
}

func TestSystemdUnit(t *testing.T) {
	u := loadUnit(t)
	env := loadEnvFile(t, "deploy/refcast.env", false)

	execStart := strings.Fields(u.get("Service", "ExecStart"))
	if len(execStart) < 2 || filepath.Base(execStart[0]) != "refcast" || execStart[1] != "serve" {
		t.Errorf("ExecStart = %q, want refcast serve", execStart)
	}
	if u.get("Service", "EnvironmentFile") == "" {
		t.Error("no EnvironmentFile: settings and the token belong in /etc/refcast/refcast.env")
	}
	for k, v := range unitEnvironment(u) {
		env[k] = v
	}
	if env["REFCAST_LISTEN"] == "" {
		t.Error("refcast.env lacks REFCAST_LISTEN")
	}
	// The token: a credential file, or (less good) the environment file.
	if f := env["REFCAST_PUBLISH_TOKEN_FILE"]; f != "" {
		cred, _, _ := strings.Cut(u.get("Service", "LoadCredential"), ":")
		if cred == "" || f != "%d/"+cred {
			t.Errorf("REFCAST_PUBLISH_TOKEN_FILE=%s does not name the LoadCredential %q", f, cred)
		}
	} else if env["REFCAST_PUBLISH_TOKEN"] == "" {
		t.Error("no publish token: want LoadCredential + REFCAST_PUBLISH_TOKEN_FILE, or REFCAST_PUBLISH_TOKEN in refcast.env")
	}

	drain, err := drainOf(execStart, env)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := parseSystemdSeconds(u.get("Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if stop <= drain {
		t.Errorf("TimeoutStopSec %v must exceed REFCAST_DRAIN %v", stop, drain)
	}

	if n, err := strconv.Atoi(u.get("Service", "LimitNOFILE")); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE = %q, want at least 65536 (one descriptor per connection)", u.get("Service", "LimitNOFILE"))
	}

	hardening := map[string]string{
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectControlGroups":    "yes",
		"RestrictNamespaces":      "yes",
		"CapabilityBoundingSet":   "",
		"SystemCallArchitectures": "native",
	}
	for k, want := range hardening {
		if vs, ok := u["Service"][k]; !ok || vs[len(vs)-1] != want {
			t.Errorf("%s = %q, want %q", k, vs, want)
		}
	}
	if u.get("Service", "User") == "" && u.get("Service", "DynamicUser") != "yes" {
		t.Error("runs as root: set DynamicUser=yes or User=")
	}
	// ProcSubset=pid hides /proc/sys/net/core/somaxconn, and Go's net
	// package then caps the listen backlog at 128.
	if u.get("Service", "ProcSubset") == "pid" {
		t.Error("ProcSubset=pid hides net.core.somaxconn from the Go runtime")
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		sa, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("SKIP: systemd-analyze is not installed")
		}
		// Point ExecStart and EnvironmentFile at files that exist here.
		dir := t.TempDir()
		bin := filepath.Join(dir, "refcast")
		if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		envFile, _ := filepath.Abs(filepath.Join(root, "deploy/refcast.env"))
		text := string(readFile(t, "deploy/refcast.service"))
		text = strings.ReplaceAll(text, "/usr/local/bin/refcast", bin)
		text = strings.ReplaceAll(text, "/etc/refcast/refcast.env", envFile)
		path := filepath.Join(dir, "refcast.service")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}
