// Command refcast is the single binary: the server node, the git hook, the
// hook installer, the watch client and the operator tools. main stays thin:
// it picks a subcommand and hands it the process's context, arguments,
// environment and standard streams.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

// Env gives a command its process environment, so tests can run commands
// in-process without touching the real one.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// LookupEnv tells a variable set but empty from one not set (the hook
	// reads git's environment with it); nil: Getenv, empty as not set.
	LookupEnv func(string) (string, bool)
}

// exitError carries an exit code; main prints nothing more for it.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageError is misuse: the message is printed and the exit code is 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, LookupEnv: os.LookupEnv}
	code := Run(ctx, os.Args[1:], env)
	stop()
	os.Exit(code)
}

// Run runs one refcast command and returns its exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = runServe(ctx, rest, env)
	case "hook":
		err = runHook(ctx, rest, env)
	case "install-hook":
		err = runInstallHook(ctx, rest, env)
	case "watch":
		err = runWatch(ctx, rest, env)
	case "relay":
		err = runRelay(ctx, rest, env)
	case "sync":
		err = runSync(ctx, rest, env)
	case "token":
		err = runToken(ctx, rest, env)
	case "version", "--version":
		fmt.Fprintf(env.Stdout, "refcast %s\n", version)
	case "help", "-h", "--help":
		fmt.Fprint(env.Stdout, usage)
	default:
		fmt.Fprintf(env.Stderr, "refcast: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	return exitCode(err, env)
}

func exitCode(err error, env Env) int {
	if err == nil {
		return 0
	}
	switch e := err.(type) {
	case exitError:
		return e.code
	case usageError:
		fmt.Fprintf(env.Stderr, "refcast: %s\n", e.msg)
		return 2
	}
	fmt.Fprintf(env.Stderr, "refcast: %v\n", err)
	return 1
}

const usage = `refcast tells people and programs the moment a git ref changes.

Usage:
  refcast serve [flags]              run a node (embedded bus unless --redis)
  refcast hook post-receive [flags]  publish a push (git runs this)
  refcast hook reference-transaction STATE  publish server-side ref changes
  refcast hook flush [flags]         republish spooled pushes
  refcast hook check [flags]         prove the destination answers, publish nothing
  refcast install-hook PATH [flags]  install the hook into a repository
  refcast watch URL --repo R [flags] follow a node and print or act on changes
  refcast relay URL --repo R [flags] deliver changes as signed webhooks
  refcast sync PATH [flags]          seed a repo's current refs into the bus
  refcast token [flags]              mint an access token
  refcast version                    print the version

Run 'refcast COMMAND -h' for a command's flags. Every flag has an
environment variable twin, shown in its help.
`
