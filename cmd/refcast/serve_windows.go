//go:build windows

package main

import (
	"context"
	"errors"
)

// runServe refuses on Windows: the node writes to client sockets with
// writev/sendmsg through the raw descriptor (server/writev.go), which
// Windows does not have. The hook, install-hook, sync, watch and token
// commands work here.
func runServe(context.Context, []string, Env) error {
	return errors.New("serve: a node does not run on Windows (it writes streams with writev/sendmsg); run it on Linux or macOS, and point the hook or watch at it")
}
