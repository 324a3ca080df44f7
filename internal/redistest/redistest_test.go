package redistest_test

import (
	"testing"

	"github.com/refcast/refcast/internal/redistest"
)

func TestRestartKeepsDataWithAOF(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{AOF: true, User: "app", Password: "pw1"})
	ctx := t.Context()
	if err := s.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	s.Kill()
	s.Restart()
	if s.Addr() != addr {
		t.Errorf("restart moved from %s to %s", addr, s.Addr())
	}
	if v, err := s.Client().Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Errorf("after restart k = %q, %v; want v", v, err)
	}
	if want := "redis://app:pw1@" + addr + "/0"; s.URL() != want {
		t.Errorf("URL = %q, want %q", s.URL(), want)
	}
}

func TestRestartLosesDataWithoutAOF(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	ctx := t.Context()
	s.Client().Set(ctx, "k", "v", 0)
	s.Stop()
	s.Restart()
	if n, _ := s.Client().Exists(ctx, "k").Result(); n != 0 {
		t.Error("data survived a restart without persistence")
	}
}
