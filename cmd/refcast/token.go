package main

import "context"

// runToken is a placeholder until its issue lands.
func runToken(ctx context.Context, args []string, env Env) error {
	return usageError{msg: "token: not implemented yet"}
}
