package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/refcast/refcast/internal/testnode"
)

// TestServeDebugAddr: with --debug-addr, pprof answers on that address and
// not on the public one; the command line (which may hold a token) is not
// served at all.
func TestServeDebugAddr(t *testing.T) {
	t.Parallel()
	bin := testnode.Build(t)
	debug := testnode.FreeAddr(t)
	n := testnode.Start(t, bin, "", "--data", t.TempDir(), "--debug-addr", debug)
	get := func(url string) (int, string) {
		t.Helper()
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return res.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, url string
		code      int
		body      string
	}{
		{"index on debug", "http://" + debug + "/debug/pprof/", http.StatusOK, "goroutine"},
		{"goroutines on debug", "http://" + debug + "/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile"},
		{"cmdline not served", "http://" + debug + "/debug/pprof/cmdline", http.StatusNotFound, ""},
		{"index not on public", n.URL + "/debug/pprof/", http.StatusNotFound, ""},
		{"goroutines not on public", n.URL + "/debug/pprof/goroutine?debug=1", http.StatusNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.url)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("GET %s = %d %.200q, want %d containing %q", tc.url, code, body, tc.code, tc.body)
			}
		})
	}
}
