package main

import "context"

// runServe is a placeholder until its issue lands.
func runServe(ctx context.Context, args []string, env Env) error {
	return usageError{msg: "serve: not implemented yet"}
}
