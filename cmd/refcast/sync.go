package main

import (
	"context"
	"errors"
	"flag"
)

const syncUsage = `Usage: refcast sync PATH [--repo NAME] [--url URL | --redis URL]

Seeds the bus with the current refs of the repository at PATH, for repos
that existed before refcast was installed. The repo's stored state is
replaced by what is on disk, and subscribers get a single "sync" event
rather than one per ref. The destination, token and repo name are found as
for 'refcast hook' (flags, REFCAST_* variables, git config refcast.*).
`

func runSync(ctx context.Context, args []string, env Env) error {
	f := newHookFlags("sync", env)
	explainFlagErrors(f.fs, env, syncUsage)
	pos, err := hookParseArgs(f.fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{code: 2}
	}
	if len(pos) != 1 {
		return usageError{msg: "sync: exactly one repository PATH is required"}
	}
	return hookError(newHookRunner(f.hookFlags(), env).Sync(ctx, pos[0]))
}
