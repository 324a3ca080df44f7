package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/hook"
)

const hookUsage = `Usage:
  refcast hook post-receive [flags]            (git runs this; reads "<old> <new> <ref>" lines)
  refcast hook reference-transaction STATE [flags]
  refcast hook flush [flags]                   republish spooled pushes, in order
  refcast hook flush --wait [flags]            retry with backoff until the spool is empty (at
                                               most 24h); what a hook that spools starts, detached
  refcast hook check [flags]                   publish nothing; prove the destination answers
                                               and accepts the token (run in the repository)
  refcast hook drain --queue DIR [flags]       long-running: publish what hooks installed with
                                               'install-hook --queue DIR' leave in DIR, in order
                                               per repository (flags override each repository's
                                               settings; each push's own environment is the one
                                               its hook carried, not the drainer's; --queue
                                               default REFCAST_QUEUE; SIGINT/SIGTERM stop it; log
                                               level and format: REFCAST_LOG_LEVEL, REFCAST_LOG_FORMAT)

Destination (one of):
  --url URL         node base URL; POST URL/v1/publish         REFCAST_URL,   git config refcast.url
                    token: REFCAST_TOKEN or git config refcast.token (never a flag)
  --redis URL       publish straight into the Redis bus        REFCAST_REDIS, git config refcast.redis
  --partitions N    Redis bus partitions (default 16)           REFCAST_PARTITIONS, refcast.partitions

Flags (flag, then environment, then git config; except --repo):
  --repo NAME       repo name; then git config refcast.repo, REFCAST_REPO, GL_PROJECT_PATH,
                    then --repo-map, then the default rule
  --repo-map REGEX=TEMPLATE   repeatable; matched against the repository's absolute path,
                    first match wins, e.g. '^/srv/git/(.+?)(\.git)?$=$1'
                                                   REFCAST_REPO_MAP (one rule per line), refcast.repoMap (multi)
  --repo-root DIR   default rule: the path below DIR without .git (else the directory's
                    base name without .git)         REFCAST_REPO_ROOT, refcast.root
  --pusher NAME     who pushed; else REFCAST_PUSHER, GL_USERNAME, GITEA_PUSHER_NAME, REMOTE_USER
  --timeout D       bound on flushing and publishing (default 2s; flush: 1m; check: 5s)
                                                   REFCAST_TIMEOUT, refcast.timeout
  --spool DIR       where undeliverable pushes wait (default <git common dir>/refcast-spool)
                                                   REFCAST_SPOOL, refcast.spool
  --enrich-budget D time for forced/commit/count enrichment (default 100ms; negative: off)
                                                   REFCAST_ENRICH_BUDGET, refcast.enrichBudget

A push is published once per repository by the mode install-hook wrote to
git config refcast.mode: the other hook, if it runs, does nothing.
Exit status: 0 when the push was published, spooled or rejected by the node
(a warning says which); 2 for misuse or malformed input.
`

// hookFlags are the command-line settings of the hook subcommands.
type hookFlags struct {
	fs           *flag.FlagSet
	repo         string
	url          string
	redis        string
	pusher       string
	spool        string
	repoRoot     string
	repoMap      hookList
	timeout      time.Duration
	enrichBudget time.Duration
	partitions   int
	wait         bool
	queue        string
}

type hookList []string

func (l *hookList) String() string     { return strings.Join(*l, "\n") }
func (l *hookList) Set(v string) error { *l = append(*l, v); return nil }

func newHookFlags(name string, env Env) *hookFlags {
	f := &hookFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs := f.fs
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { fmt.Fprint(env.Stderr, hookUsage) }
	fs.StringVar(&f.repo, "repo", "", "repo name")
	fs.StringVar(&f.url, "url", "", "node URL")
	fs.StringVar(&f.redis, "redis", "", "Redis URL")
	fs.StringVar(&f.pusher, "pusher", "", "pusher")
	fs.StringVar(&f.spool, "spool", "", "spool directory")
	fs.StringVar(&f.repoRoot, "repo-root", "", "repo root")
	fs.Var(&f.repoMap, "repo-map", "REGEX=TEMPLATE")
	fs.DurationVar(&f.timeout, "timeout", 0, "timeout")
	fs.DurationVar(&f.enrichBudget, "enrich-budget", 0, "enrichment budget")
	fs.IntVar(&f.partitions, "partitions", 0, "Redis bus partitions")
	fs.BoolVar(&f.wait, "wait", false, "flush: retry until the spool is empty")
	fs.StringVar(&f.queue, "queue", "", "drain: the queue directory")
	explainFlagErrors(fs, env, hookUsage) // a bad flag: one line and a pointer to -h, not the whole help
	return f
}

// hookParseArgs parses flags anywhere among the arguments and returns
// the positional ones.
func hookParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at "--" (consumed) or at the first positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// hookFlags turns the parsed command line into hook.Flags: only flags
// given count, so the environment and git config fill the rest.
func (f *hookFlags) hookFlags() hook.Flags {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	hf := hook.Flags{Repo: f.repo, Pusher: f.pusher, RepoMap: f.repoMap}
	hf.URL = ifSet(set["url"], &f.url)
	hf.Redis = ifSet(set["redis"], &f.redis)
	hf.Spool = ifSet(set["spool"], &f.spool)
	hf.RepoRoot = ifSet(set["repo-root"], &f.repoRoot)
	hf.Timeout = ifSet(set["timeout"], &f.timeout)
	hf.EnrichBudget = ifSet(set["enrich-budget"], &f.enrichBudget)
	hf.Partitions = ifSet(set["partitions"], &f.partitions)
	return hf
}

// ifSet is v when the flag was given, else nil (not given: the
// environment and git config decide).
func ifSet[T any](given bool, v *T) *T {
	if given {
		return v
	}
	return nil
}

// newHookRunner wires a hook.Runner to the process: its streams and
// environment, and the Redis bus for --redis.
func newHookRunner(flags hook.Flags, env Env) *hook.Runner {
	return &hook.Runner{Flags: flags, Getenv: env.Getenv, LookupEnv: env.LookupEnv, Stdin: env.Stdin, Stdout: env.Stdout, Stderr: env.Stderr, OpenBus: openHookBus}
}

// flushCommand is "refcast hook flush --wait" with the destination flags
// this run was given (the environment and git config it inherits supply
// the rest); nil when this binary cannot be found.
func (f *hookFlags) flushCommand() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	cmd := []string{exe, "hook", "flush", "--wait"}
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "url", "redis", "partitions", "timeout":
			cmd = append(cmd, "--"+fl.Name+"="+fl.Value.String())
		}
	})
	return cmd
}

// openHookBus opens the Redis bus a hook publishes to; redis.Open checks
// that Redis answers.
func openHookBus(ctx context.Context, url string, partitions int) (hook.Bus, error) {
	// go-redis's own lines would reach the pusher as "remote: redis: ..."
	// before the hook's one warning that says what happened: drop them.
	routeRedisLog(slog.New(slog.DiscardHandler), slog.LevelDebug)
	b, err := redis.Open(ctx, url, redis.Options{Partitions: partitions})
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return b, nil
}

// hookError maps the hook package's errors to exit codes: misuse exits 2
// with its message, an ExitStatus was already reported.
func hookError(err error) error {
	var ue *hook.UsageError
	var st hook.ExitStatus
	switch {
	case errors.As(err, &ue):
		return usageError{msg: ue.Msg}
	case errors.As(err, &st):
		return exitError{code: int(st)}
	}
	return err
}

func runHook(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stderr, hookUsage)
		if len(args) == 0 {
			return exitError{code: 2}
		}
		return nil
	}
	sub := args[0]
	f := newHookFlags("hook "+sub, env)
	pos, err := hookParseArgs(f.fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{code: 2}
	}
	want := map[string]int{hook.ModePostReceive: 0, hook.ModeReferenceTransaction: 1, "flush": 0, "check": 0, "drain": 0}
	n, known := want[sub]
	switch {
	case !known:
		return usageError{msg: fmt.Sprintf("hook: unknown hook %q (want post-receive, reference-transaction, flush, check or drain)", sub)}
	case sub == hook.ModeReferenceTransaction && len(pos) != 1:
		return usageError{msg: "hook reference-transaction: want exactly one argument, the state git passes (prepared, committed, aborted)"}
	case len(pos) > n:
		return usageError{msg: fmt.Sprintf("hook %s: unexpected argument %q", sub, pos[n])}
	case f.wait && sub != "flush":
		return usageError{msg: fmt.Sprintf("hook %s: --wait applies to hook flush only", sub)}
	case f.queue != "" && sub != "drain":
		return usageError{msg: fmt.Sprintf("hook %s: --queue applies to hook drain only (a queue-mode hook script writes the queue itself)", sub)}
	case sub == "drain" && (f.repo != "" || f.pusher != ""):
		return usageError{msg: "hook drain: --repo and --pusher would name every repository's pushes alike; set refcast.repo in each repository's git config (or give --repo-root / --repo-map)"}
	}
	if sub == "drain" && f.queue == "" {
		if f.queue = env.Getenv("REFCAST_QUEUE"); f.queue == "" {
			return usageError{msg: "hook drain: --queue DIR is required (or REFCAST_QUEUE): the directory given to 'refcast install-hook --queue DIR'"}
		}
	}
	r := newHookRunner(f.hookFlags(), env)
	r.FlushCommand = f.flushCommand()
	switch sub {
	case hook.ModePostReceive:
		err = r.PostReceive(ctx)
	case hook.ModeReferenceTransaction:
		err = r.ReferenceTransaction(ctx, pos[0])
	case "flush":
		if f.wait {
			err = r.FlushWait(ctx)
		} else {
			err = r.Flush(ctx)
		}
	case "check":
		err = r.Check(ctx)
	case "drain":
		err = drainQueue(ctx, r, f.queue, env)
	}
	return hookError(err)
}

// drainQueue runs `refcast hook drain`: its log goes to standard error,
// at REFCAST_LOG_LEVEL (default info; debug adds a line per push with how
// long it waited and took) in REFCAST_LOG_FORMAT (text or json), as serve's.
func drainQueue(ctx context.Context, r *hook.Runner, dir string, env Env) error {
	level, format := cmp.Or(env.Getenv("REFCAST_LOG_LEVEL"), "info"), cmp.Or(env.Getenv("REFCAST_LOG_FORMAT"), "text")
	log, err := newLogger(level, format, env)
	if err != nil {
		return err
	}
	q, err := hook.OpenQueue(dir)
	if errors.Is(err, hook.ErrDrainerRunning) {
		return fmt.Errorf("hook drain: %w", err)
	}
	if err != nil {
		return usageError{msg: "hook drain: " + err.Error()}
	}
	defer q.Close()
	routeRedisLog(log, slog.LevelWarn)
	log.Info("draining the queue", slog.String("queue", dir))
	if err := r.Drain(ctx, q, hook.DrainOptions{Log: log}); err != nil {
		return fmt.Errorf("hook drain: %w", err)
	}
	log.Info("drain stopped", slog.String("queue", dir))
	return nil
}
