package arch

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/refcast/refcast/"

// rules are the arrows of docs/architecture.md's package graph: for each
// package (and its subpackages unless exact), the refcast packages its
// transitive dependencies may not include, and why.
var rules = []struct {
	pkg    string
	exact  bool
	forbid []string
	why    string
}{
	{"bus", true, []string{""}, "the domain imports nothing of refcast"},
	{"bus/memory", true, []string{"bus/bolt", "bus/redis", "server", "wire", "hook"}, "a bus implementation imports bus only"},
	{"bus/bolt", true, []string{"bus/memory", "bus/redis", "server", "wire", "hook"}, "a bus implementation imports bus only"},
	{"bus/redis", true, []string{"bus/memory", "bus/bolt", "server", "wire", "hook"}, "a bus implementation imports bus only"},
	{"wire", true, []string{"server", "watch", "hook", "auth", "bus/"}, "the protocol imports only the domain"},
	{"server", false, []string{"bus/", "hook", "watch", "cmd"}, "a node talks to the bus through its interface, never an implementation"},
	{"hook", true, []string{"server", "bus/redis", "bus/bolt", "bus/memory", "watch"}, "the hook gets a bus through an opener the command injects"},
	{"watch", true, []string{"server", "hook", "bus/"}, "the client shares the protocol, not the node"},
	{"relay", true, []string{"server", "hook", "watch", "auth", "gitfront", "bus/"}, "the relay delivers events it is handed; cmd/refcast wires it to watch's client"},
	{"auth", true, []string{"server", "hook", "watch", "bus/"}, "auth decides claims, not HTTP status or transport"},
	{"gitfront", true, []string{"server", "hook", "watch", "auth", "bus/"}, "git's protocol over the bus state; the node mounts it and decides access"},
	{"forge", true, []string{"server", "hook", "watch", "auth", "wire", "gitfront", "bus/"}, "forge webhooks to pushes; the node adapts it to HTTP and publishes"},
	{"cmd/refcast-bench", true, []string{"server", "bus/", "hook"}, "the load tool is a pure client of the shipped node"},
}

func TestPackageGraph(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Deps", module+"...").Output()
	if err != nil {
		t.Skipf("go list: %v", err) // no go toolchain in this environment
	}
	deps := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if rel, ok := strings.CutPrefix(p.ImportPath, module); ok {
			deps[rel] = p.Deps
		}
	}
	for _, r := range rules {
		for pkg, ds := range deps {
			if pkg != r.pkg && (r.exact || !strings.HasPrefix(pkg, r.pkg+"/")) {
				continue
			}
			for _, d := range ds {
				rel, ok := strings.CutPrefix(d, module)
				if !ok {
					continue
				}
				for _, f := range r.forbid {
					bad := f == "" || rel == f || strings.HasPrefix(rel, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(rel, f))
					// internal/ helpers (flock, proc) are allowed everywhere.
					if bad && !strings.HasPrefix(rel, "internal/") {
						t.Errorf("%s depends on %s: %s", pkg, rel, r.why)
					}
				}
			}
		}
	}
	if len(deps) < 10 {
		t.Fatalf("go list found only %d refcast packages", len(deps))
	}
}
