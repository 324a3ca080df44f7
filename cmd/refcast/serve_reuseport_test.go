//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/refcast/refcast/internal/testnode"
)

// TestServeBindsWhileOldDrains: a node started on the address of one
// that is draining (SIGTERM, a long --drain, an open stream) binds at once
// and answers /healthz, instead of failing with "address already in use"
// until the old one closes its listener.
func TestServeBindsWhileOldDrains(t *testing.T) {
	addr := testnode.FreeAddr(t)
	url := "http://" + addr
	start := func(drain string) (stop func(), done chan int, errb *wtBuf) {
		ctx, cancel := context.WithCancel(context.Background())
		env, _, errb := wtEnv(nil)
		done = make(chan int, 1)
		go func() {
			done <- Run(ctx, []string{"serve", "--listen", addr, "--data", t.TempDir(), "--drain", drain}, env)
		}()
		return cancel, done, errb
	}
	stopOld, oldDone, oldLog := start("10s")
	defer func() {
		stopOld()
		if code := <-oldDone; code != 0 {
			t.Errorf("old node exited %d: %s", code, oldLog.String())
		}
	}()
	wtEventually(t, func() bool { return strings.Contains(oldLog.String(), "refcast serving") }, "old node serving: "+oldLog.String())
	wtEventually(t, func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "old node ready")
	stream := testnode.Subscribe(t, url+"/v1/events?repo=**", nil)
	defer stream.Close() // ends the old node's drain

	stopOld() // what SIGTERM does: the node drains its stream over --drain
	wtEventually(t, func() bool { return strings.Contains(oldLog.String(), "shutting down") }, "old node draining: "+oldLog.String())

	stopNew, newDone, newLog := start("10ms")
	newExited := false
	defer func() {
		stopNew()
		if !newExited {
			<-newDone
		}
	}()
	wtEventually(t, func() bool {
		select {
		case code := <-newDone:
			newExited = true
			t.Fatalf("new node exited %d while the old one drained:\n%s", code, newLog.String())
		default:
		}
		return strings.Contains(newLog.String(), "refcast serving")
	}, "new node serving: "+newLog.String())
	// Both listeners share the port until the old node closes its own, so
	// a connection lands on either. The draining one answers /readyz with
	// 503, so a 200 comes from the new node; /healthz answers 200 as well.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // a new connection each time
	for _, path := range []string{"/readyz", "/healthz"} {
		wtEventually(t, func() bool {
			resp, err := client.Get(url + path)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, "200 from the new node's "+path)
	}
	select {
	case <-oldDone:
		t.Error("the old node finished draining before the new one answered: the test proved nothing")
	default:
	}
}
