package hook

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
