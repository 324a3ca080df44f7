package flock_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/refcast/refcast/internal/flock"
)

// TestExclusive checks the contract callers rely on: a second open of the
// same file cannot lock it while the first holds the lock, and can once it
// is released, by Unlock or by Close.
func TestExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b := open(), open()
	if err := flock.TryLock(a); err != nil {
		t.Fatalf("first lock: %v", err)
	}
	if err := flock.TryLock(b); !errors.Is(err, flock.ErrWouldBlock) {
		t.Fatalf("second lock while held: %v, want ErrWouldBlock", err)
	}
	if err := flock.Unlock(a); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if err := flock.TryLock(b); err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	b.Close()
	if err := flock.TryLock(a); err != nil {
		t.Fatalf("lock after the holder closed: %v", err)
	}
}
