package main

import "context"

// runHook is a placeholder until its issue lands.
func runHook(ctx context.Context, args []string, env Env) error {
	return usageError{msg: "hook: not implemented yet"}
}
