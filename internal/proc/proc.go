// Package proc holds what tests need to start helper processes (redis-server,
// nodes, balancers) that cannot outlive the test binary.
//
// It is for tests and test helpers only; it is not a process supervisor.
package proc
