package main

import "context"

// runWatch is a placeholder until its issue lands.
func runWatch(ctx context.Context, args []string, env Env) error {
	return usageError{msg: "watch: not implemented yet"}
}
