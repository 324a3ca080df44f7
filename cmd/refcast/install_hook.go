package main

import "context"

// runInstallHook is a placeholder until its issue lands.
func runInstallHook(ctx context.Context, args []string, env Env) error {
	return usageError{msg: "install_hook: not implemented yet"}
}
