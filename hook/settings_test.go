package hook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// TestResolvePrecedence: a flag wins even when empty, then the environment,
// then git config; the token is never a flag.
func TestResolvePrecedence(t *testing.T) {
	env := map[string]string{"REFCAST_URL": "http://env", "REFCAST_TIMEOUT": "3s", "REFCAST_TOKEN": "", "REMOTE_USER": "remote"}
	cfg := Config{"url": {"http://cfg"}, "timeout": {"4s"}, "token": {"cfg-token"}, "partitions": {"8"}, "enrichbudget": {"1ms"}}
	cases := []struct {
		name  string
		flags Flags
		env   map[string]string
		check func(Settings) bool
	}{
		{"config alone", Flags{}, nil, func(s Settings) bool {
			return s.URL == "http://cfg" && s.Timeout == 4*time.Second && s.Token == "cfg-token" && s.Partitions == 8 && s.EnrichBudget == time.Millisecond
		}},
		{"environment over config", Flags{}, env, func(s Settings) bool {
			return s.URL == "http://env" && s.Timeout == 3*time.Second && s.Token == "cfg-token" && s.Pusher == "remote"
		}},
		{"flag over both", Flags{URL: ptr("http://flag"), Timeout: ptr(time.Second), Partitions: ptr(2), Pusher: "flagged"}, env, func(s Settings) bool {
			return s.URL == "http://flag" && s.Timeout == time.Second && s.Partitions == 2 && s.Pusher == "flagged"
		}},
		{"empty flag still wins", Flags{URL: ptr("")}, env, func(s Settings) bool { return s.URL == "" }},
		{"spool defaults to the common dir", Flags{}, nil, func(s Settings) bool {
			return s.Spool == filepath.Join("/srv/x.git", DefaultSpoolName)
		}},
	}
	repo := &Repo{CommonDir: "/srv/x.git", Path: "/srv/x.git"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			s, err := Resolve(Sources{Flags: tc.flags, Getenv: getenv, Config: cfg}, repo, true)
			if err != nil || !tc.check(s) {
				t.Fatalf("%+v, %v", s, err)
			}
			if s.RepoName != "x" {
				t.Fatalf("repo name %q, want x (the default rule)", s.RepoName)
			}
		})
	}
}

func TestResolveMisuse(t *testing.T) {
	cases := []struct {
		name string
		src  Sources
		want string
	}{
		{"two destinations", Sources{Flags: Flags{Redis: ptr("redis://r")}, Config: Config{"url": {"http://u"}}}, "keep one"},
		{"bad duration", Sources{Config: Config{"timeout": {"soon"}}}, "--timeout"},
		{"bad partitions", Sources{Config: Config{"partitions": {"many"}}}, "--partitions"},
		{"bad repo map", Sources{Flags: Flags{RepoMap: []string{"nothing"}}}, "REGEX=TEMPLATE"},
		{"bad repo name", Sources{Flags: Flags{Repo: "demo app"}}, "demo app"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(tc.src, &Repo{CommonDir: "/r.git", Path: "/r.git"}, true)
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v; want a UsageError with %q", err, tc.want)
			}
		})
	}
}

func TestValidators(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"http url", ValidateNodeURL("http://127.0.0.1:8080"), true},
		{"https url with path", ValidateNodeURL("https://events.example.com/refcast"), true},
		{"no scheme", ValidateNodeURL("127.0.0.1:18081"), false},
		{"no host", ValidateNodeURL("http:///v1"), false},
		{"redis scheme", validateRedisURL("redis-sentinel://h1:1,h2:2/m"), true},
		{"not redis", validateRedisURL("tcp://h:6379"), false},
		{"token", ValidateToken("eyJhbGciOi.x-y_z"), true},
		{"empty token", ValidateToken(""), false},
		{"token with newline", ValidateToken("abc\n"), false},
		{"token with non-ASCII", ValidateToken("abcé"), false},
	} {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, tc.err, tc.ok)
		}
	}
	if err := ValidateNodeURL("http//user:hunter2@x"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("a password may not reach the message: %v", err)
	}
}

func TestEphemeral(t *testing.T) {
	temps, caches := []string{"/tmp"}, []string{"/home/a/.cache/go-build"}
	for bin, want := range map[string]bool{
		"/tmp/go-build1234/b001/exe/refcast":   true,
		"/home/a/.cache/go-build/ab/cdef-d/rc": true,
		"/tmp/refcast-bin-1/refcast":           false,
		"/usr/local/bin/refcast":               false,
		"/tmpx/go-build1/refcast":              false,
	} {
		if got := ephemeral(bin, temps, caches); got != want {
			t.Errorf("%s: %v, want %v", bin, got, want)
		}
	}
}

// TestCheckNodeStatuses: how a node's answer to the empty push reads.
func TestCheckNodeStatuses(t *testing.T) {
	cases := []struct {
		status int
		want   error // nil: accepted
		text   string
	}{
		{http.StatusBadRequest, nil, ""},
		{http.StatusUnauthorized, ErrUnauthorized, "wrong publish token"},
		{http.StatusForbidden, ErrUnauthorized, "wrong publish token"},
		{http.StatusNotFound, ErrNotANode, "base URL"},
		{http.StatusOK, ErrNotANode, "no id"},
		{http.StatusTooManyRequests, nil, "rate limited"},
		{http.StatusServiceUnavailable, nil, "503"},
	}
	for _, tc := range cases {
		var gotBody, gotAuth string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b := make([]byte, 100)
			n, _ := r.Body.Read(b)
			gotBody, gotAuth = string(b[:n]), r.Header.Get("Authorization")
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte(`{"error":"wrong publish token"}`))
		}))
		err := CheckNode(context.Background(), srv.Client(), srv.URL, "tok", "acme/app")
		srv.Close()
		switch {
		case gotBody != `{"repo":"acme/app"}` || gotAuth != "Bearer tok":
			t.Errorf("%d: sent %q with %q", tc.status, gotBody, gotAuth)
		case tc.want == nil && tc.text == "" && err != nil:
			t.Errorf("%d: %v, want accepted", tc.status, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%d: %v, want %v", tc.status, err, tc.want)
		case err != nil && !strings.Contains(err.Error(), tc.text):
			t.Errorf("%d: %v, want %q in it", tc.status, err, tc.text)
		}
	}
}
