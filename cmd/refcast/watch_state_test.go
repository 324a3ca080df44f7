package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWatchStateCheckedAtStart: a --state file that could not be saved or
// read stops watch before it follows anything, with a message naming the
// file and what to do.
func TestWatchStateCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt")
	os.WriteFile(corrupt, []byte("not json\n"), 0o600)
	oldVersion := filepath.Join(dir, "v9")
	os.WriteFile(oldVersion, []byte(`{"v":9,"cursor":"x"}`+"\n"), 0o600)
	tests := []struct {
		name, state string
		want        []string
	}{
		{"missing directory", filepath.Join(dir, "nonexistent-dir", "x"), []string{"nonexistent-dir/x", "cannot be saved", "create the directory"}},
		{"corrupt file", corrupt, []string{corrupt, "fix or remove the file"}},
		{"unknown version", oldVersion, []string{oldVersion, "unknown version 9", "fix or remove"}},
		{"directory as file", dir, []string{dir, "is a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, out, errb := wtEnv(nil)
			// The URL is never dialled: the check comes first.
			code := Run(context.Background(), []string{"watch", "http://127.0.0.1:1", "--repo", "acme/app", "--state", tt.state}, env)
			if code == 0 {
				t.Fatalf("exit 0, want non-zero; stderr %s", errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
			if out.String() != "" || strings.Contains(errb.String(), "connect") {
				t.Errorf("watch followed the stream before failing:\n%s%s", out.String(), errb.String())
			}
		})
	}
}

// TestWatchStateSaveFailureStops: when the state cannot be saved while
// running (its directory vanished), watch stops with a non-zero exit
// instead of logging and going on without a position.
func TestWatchStateSaveFailureStops(t *testing.T) {
	url := wtNode(t)
	dir := filepath.Join(t.TempDir(), "state-dir")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	env, _, errb := wtEnv(nil)
	done := make(chan int, 1)
	go func() {
		done <- Run(context.Background(), []string{"watch", url, "--repo", "acme/*", "--state", state, "--min-backoff", "20ms"}, env)
	}()
	wtEventually(t, func() bool { return strings.Contains(errb.String(), "connected") }, "watch connected: "+errb.String())
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	wtPublish(t, url, "acme/app", "refs/heads/one")
	select {
	case code := <-done:
		if code == 0 {
			t.Fatalf("exit 0 after the state could not be saved; stderr %s", errb.String())
		}
		for _, w := range []string{state, "cannot keep its position"} {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("stderr lacks %q:\n%s", w, errb.String())
			}
		}
	case <-time.After(15 * time.Second): // a guard, not a measured duration
		t.Fatalf("watch kept running after the state could not be saved:\n%s", errb.String())
	}
}
