package hook

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// snapshot is every file of the hooks directory and the config file.
func snapshot(t *testing.T, hooks, config string) map[string]string {
	t.Helper()
	m := map[string]string{}
	ents, _ := os.ReadDir(hooks)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(hooks, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := e.Info()
		m["hooks/"+e.Name()] = fi.Mode().String() + "\n" + string(data)
	}
	data, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	m["config"] = string(data)
	return m
}

func sameSnapshot(t *testing.T, what string, a, b map[string]string) {
	t.Helper()
	for k, v := range a {
		if b[k] != v {
			t.Errorf("%s: %s differs:\n--- before\n%s\n--- after\n%s", what, k, v, b[k])
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("%s: %s appeared", what, k)
		}
	}
}

// fakeRefcast is a "refcast binary" that records its arguments and input.
func fakeRefcast(t *testing.T) (bin, log string) {
	dir := t.TempDir()
	bin, log = filepath.Join(dir, "fake refcast"), filepath.Join(dir, "log")
	script := "#!/bin/sh\necho \"refcast $*\" >>'" + log + "'\ncat >>'" + log + "'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, log
}

func TestInstallChainsIdempotentUninstall(t *testing.T) {
	t.Parallel()
	bare, _ := newRepos(t)
	ctx := context.Background()
	r := openRepo(t, bare)
	hooks := filepath.Join(bare, "hooks")
	prevLog := filepath.Join(t.TempDir(), "prev")
	prev := "#!/bin/sh\necho previous \"$@\" >>'" + prevLog + "'\ncat >>'" + prevLog + "'\nexit 3\n"
	os.WriteFile(filepath.Join(hooks, "post-receive"), []byte(prev), 0o750)
	git(t, bare, "config", "refcast.token", "keep-me")
	git(t, bare, "config", "refcast.url", "http://old")
	before := snapshot(t, hooks, filepath.Join(bare, "config"))

	bin, log := fakeRefcast(t)
	opts := InstallOptions{Binary: bin, Config: map[string]string{"url": "http://node:8080", "repo": "acme/app"}}
	res, err := Install(ctx, r, opts)
	if err != nil || !res.Changed || res.Previous == "" {
		t.Fatalf("install: %+v %v", res, err)
	}
	installed := snapshot(t, hooks, filepath.Join(bare, "config"))
	if got := git(t, bare, "config", "refcast.url"); got != "http://node:8080" {
		t.Fatalf("url %q", got)
	}

	// Chaining: the previous hook runs first with the same input and its
	// exit status is the hook's.
	in := idA + " " + idB + " refs/heads/main\n"
	cmd := exec.Command(filepath.Join(hooks, "post-receive"))
	cmd.Dir = bare
	cmd.Stdin = strings.NewReader(in)
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("exit status %v, want 3 from the previous hook", err)
	}
	if got, _ := os.ReadFile(prevLog); string(got) != "previous\n"+in {
		t.Fatalf("previous hook saw %q", got)
	}
	if got, _ := os.ReadFile(log); string(got) != "refcast hook post-receive\n"+in {
		t.Fatalf("refcast saw %q", got)
	}

	// Idempotent.
	res, err = Install(ctx, r, opts)
	if err != nil || res.Changed {
		t.Fatalf("second install: %+v %v", res, err)
	}
	sameSnapshot(t, "second install", installed, snapshot(t, hooks, filepath.Join(bare, "config")))

	// Switching mode leaves exactly one refcast hook.
	if _, err := Install(ctx, r, InstallOptions{Mode: ModeReferenceTransaction, Binary: bin}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(hooks, "post-receive")); string(data) != prev {
		t.Fatalf("post-receive not restored on mode switch: %q", data)
	}
	if data, _ := os.ReadFile(filepath.Join(hooks, "reference-transaction")); !isOurs(data) {
		t.Fatal("reference-transaction hook not installed")
	}

	// Uninstall restores everything, byte for byte.
	if _, err := Uninstall(ctx, r); err != nil {
		t.Fatal(err)
	}
	sameSnapshot(t, "uninstall", before, snapshot(t, hooks, filepath.Join(bare, "config")))
	if _, err := os.Stat(filepath.Join(bare, installStateName)); !os.IsNotExist(err) {
		t.Fatalf("install state left behind: %v", err)
	}
}

func TestInstallFreshRepoUninstallRemovesSection(t *testing.T) {
	t.Parallel()
	bare, _ := newRepos(t)
	ctx := context.Background()
	r := openRepo(t, bare)
	before := snapshot(t, filepath.Join(bare, "hooks"), filepath.Join(bare, "config"))
	bin, _ := fakeRefcast(t)
	if _, err := Install(ctx, r, InstallOptions{Binary: bin, Config: map[string]string{"redis": "redis://x:6379"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Uninstall(ctx, r); err != nil {
		t.Fatal(err)
	}
	sameSnapshot(t, "uninstall", before, snapshot(t, filepath.Join(bare, "hooks"), filepath.Join(bare, "config")))
}

func TestInstallHonoursHooksPath(t *testing.T) {
	t.Parallel()
	bare, wc := newRepos(t)
	shared := filepath.Join(t.TempDir(), "shared-hooks")
	git(t, bare, "config", "core.hooksPath", shared)
	bin, log := fakeRefcast(t)
	res, err := Install(context.Background(), openRepo(t, bare), InstallOptions{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	if res.Hook != filepath.Join(shared, "post-receive") {
		t.Fatalf("hook at %s, want in %s", res.Hook, shared)
	}
	if _, err := os.Stat(filepath.Join(bare, "hooks", "post-receive")); err == nil {
		t.Fatal("hook written to hooks/ despite core.hooksPath")
	}
	// git runs it on push.
	commit(t, wc, "hooked")
	git(t, wc, "push", "-q", "origin", "main")
	if got, _ := os.ReadFile(log); !strings.HasPrefix(string(got), "refcast hook post-receive\n") {
		t.Fatalf("hook did not run: %q", got)
	}
}

// legacyHookScript is the script install-hook wrote before the hooks
// directory came from parameter expansion: it ran dirname on every push.
func legacyHookScript(mode, binary string) string {
	q := shellQuote(binary)
	return `#!/bin/sh
` + scriptMarker + `
# Mode ` + mode + `. Undo with: refcast install-hook --uninstall <repository>
# A hook that was here before runs first, from ` + mode + previousSuffix + `.
prev="$(dirname "$0")/` + mode + previousSuffix + `"
if [ ! -x "$prev" ]; then
	exec ` + q + ` hook ` + mode + ` "$@"
fi
in=$(mktemp "${TMPDIR:-/tmp}/refcast-hook.XXXXXX") || exit 1
trap 'rm -f "$in"' EXIT
cat >"$in"
"$prev" "$@" <"$in"
status=$?
` + q + ` hook ` + mode + ` "$@" <"$in"
exit $status
`
}

// TestHookScriptFindsPreviousHook runs the script as git does (a path
// with a slash, absolute or relative) and as a person might (sh NAME in
// the hooks directory): each finds the chained hook, which runs first.
func TestHookScriptFindsPreviousHook(t *testing.T) {
	t.Parallel()
	bare, _ := newRepos(t)
	hooks := filepath.Join(bare, "hooks")
	prevLog := filepath.Join(t.TempDir(), "prev")
	prev := "#!/bin/sh\necho previous \"$@\" >>'" + prevLog + "'\ncat >>'" + prevLog + "'\nexit 3\n"
	os.WriteFile(filepath.Join(hooks, "post-receive"), []byte(prev), 0o750)
	bin, log := fakeRefcast(t)
	if _, err := Install(context.Background(), openRepo(t, bare), InstallOptions{Binary: bin}); err != nil {
		t.Fatal(err)
	}
	script, _ := os.ReadFile(filepath.Join(hooks, "post-receive"))
	if strings.Contains(string(script), "dirname") {
		t.Fatalf("the script starts dirname:\n%s", script)
	}
	in := strings.Repeat("1", 40) + " " + strings.Repeat("2", 40) + " refs/heads/main\n"
	for _, tc := range []struct {
		name, dir string
		argv      []string
	}{
		{"absolute", bare, []string{filepath.Join(hooks, "post-receive")}},
		{"relative", bare, []string{"./hooks/post-receive"}},
		{"no slash", hooks, []string{"sh", "post-receive"}},
	} {
		os.Remove(prevLog)
		os.Remove(log)
		var err error
		// The script was just written: a process another parallel test
		// forked at that moment can hold the write descriptor until it
		// execs, and exec then fails with ETXTBSY (golang/go#22315).
		for range 50 {
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.Dir, cmd.Stdin = tc.dir, strings.NewReader(in)
			if err = cmd.Run(); !errors.Is(err, syscall.ETXTBSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Errorf("%s: exit status %v, want 3 from the previous hook", tc.name, err)
		}
		if got, _ := os.ReadFile(prevLog); string(got) != "previous\n"+in {
			t.Errorf("%s: previous hook saw %q", tc.name, got)
		}
		if got, _ := os.ReadFile(log); string(got) != "refcast hook post-receive\n"+in {
			t.Errorf("%s: refcast saw %q", tc.name, got)
		}
	}
}

// TestInstallUpgradesEarlierScript: a script an earlier version installed
// (dirname and all) still runs both hooks; installing again replaces it
// with today's, keeping the chained hook; uninstalling restores that.
func TestInstallUpgradesEarlierScript(t *testing.T) {
	t.Parallel()
	bare, _ := newRepos(t)
	ctx := context.Background()
	r := openRepo(t, bare)
	hooks := filepath.Join(bare, "hooks")
	prevLog := filepath.Join(t.TempDir(), "prev")
	prev := "#!/bin/sh\necho previous >>'" + prevLog + "'\ncat >/dev/null\n"
	os.WriteFile(filepath.Join(hooks, "post-receive"), []byte(prev), 0o750)
	bin, log := fakeRefcast(t)
	opts := InstallOptions{Binary: bin, Config: map[string]string{"url": "http://node:8080"}}
	if _, err := Install(ctx, r, opts); err != nil {
		t.Fatal(err)
	}
	// As the earlier version left it.
	legacy := legacyHookScript(ModePostReceive, bin)
	if err := os.WriteFile(filepath.Join(hooks, "post-receive"), []byte(legacy), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(hooks, "post-receive"))
	cmd.Dir, cmd.Stdin = bare, strings.NewReader("x\n")
	if err := cmd.Run(); err != nil {
		t.Fatalf("earlier script: %v", err)
	}
	if got, _ := os.ReadFile(prevLog); string(got) != "previous\n" {
		t.Fatalf("earlier script: previous hook logged %q", got)
	}
	if got, _ := os.ReadFile(log); string(got) != "refcast hook post-receive\nx\n" {
		t.Fatalf("earlier script: refcast saw %q", got)
	}

	res, err := Install(ctx, r, opts)
	if err != nil || !res.Changed || res.Previous != filepath.Join(hooks, "post-receive"+previousSuffix) {
		t.Fatalf("install over the earlier script: %+v %v", res, err)
	}
	if got, _ := os.ReadFile(filepath.Join(hooks, "post-receive")); string(got) != hookScript(ModePostReceive, bin, "") {
		t.Fatalf("script not upgraded:\n%s", got)
	}
	if got, _ := os.ReadFile(filepath.Join(hooks, "post-receive"+previousSuffix)); string(got) != prev {
		t.Fatalf("chained hook changed: %q", got)
	}

	// Uninstall recognises either script.
	os.WriteFile(filepath.Join(hooks, "post-receive"), []byte(legacy), 0o755)
	if _, err := Uninstall(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(hooks, "post-receive")); string(got) != prev {
		t.Fatalf("uninstall left %q", got)
	}
}
