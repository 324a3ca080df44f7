package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWatchMessages: misuse of `refcast watch` beyond its flags says what
// to do, in one line.
func TestWatchMessages(t *testing.T) {
	t.Parallel()
	corrupt := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(corrupt, []byte(`{"v":1,"cursor":`), 0o600); err != nil {
		t.Fatal(err)
	}
	future := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(future, []byte(`{"v":9,"cursor":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want []string // each in the one line
	}{
		{"host and port without a scheme", []string{"127.0.0.1:18081", "--repo", "a"}, 2,
			[]string{`node URL "127.0.0.1:18081" has no scheme; write http://127.0.0.1:18081 (or https://)`}},
		{"name and port without a scheme", []string{"localhost:8080", "--repo", "a"}, 2,
			[]string{`node URL "localhost:8080" has no scheme; write http://localhost:8080`}},
		{"other scheme", []string{"ftp://h:21", "--repo", "a"}, 2,
			[]string{`scheme "ftp" is not http or https; write http://HOST:PORT or https://HOST`}},
		{"no host", []string{"http:///v1/events", "--repo", "a"}, 2,
			[]string{`names no host; write http://HOST:PORT`}},
		{"corrupt state", []string{"http://127.0.0.1:1", "--repo", "a", "--state", corrupt}, 1,
			[]string{"state file " + corrupt + " is corrupt", "delete it to start from now"}},
		{"state of another version", []string{"http://127.0.0.1:1", "--repo", "a", "--state", future}, 1,
			[]string{"state file " + future + " is corrupt (unknown version 9", "delete it"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stderr := runCmd(t, nil, append([]string{"watch"}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if n := strings.Count(stderr, "\n"); n != 1 {
				t.Errorf("stderr has %d lines, want 1:\n%s", n, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}
