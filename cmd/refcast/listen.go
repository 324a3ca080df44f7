//go:build !windows

package main

import (
	"context"
	"net"
)

// listenServe opens the node's listener with SO_REUSEPORT where the
// platform has it (listen_reuseport.go), so a node restarted on the same
// address binds while the old one still drains: the old node keeps its
// listener open through --drain (new streams get a 503 with retry: there),
// and without the option the new one would fail with "address already in
// use" for that whole window. Both accept until the old one closes.
func listenServe(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	return lc.Listen(ctx, "tcp", addr)
}
