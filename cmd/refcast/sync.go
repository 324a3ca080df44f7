package main

import "context"

// runSync is a placeholder until its issue lands.
func runSync(ctx context.Context, args []string, env Env) error {
	return usageError{msg: "sync: not implemented yet"}
}
