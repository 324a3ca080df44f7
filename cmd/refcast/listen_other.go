//go:build !windows && !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

import "syscall"

// reusePort is nil here: no SO_REUSEPORT, so a restarted node binds only
// once the old one has closed its listener (after --drain).
var reusePort func(network, address string, c syscall.RawConn) error
