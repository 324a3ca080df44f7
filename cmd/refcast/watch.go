package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/refcast/refcast/watch"
)

// watchConfig is everything `refcast watch` is told.
type watchConfig struct {
	url         string
	repos       listFlag
	refs        listFlag
	json        bool
	exec        string
	debounce    time.Duration
	state       string
	tokenFile   string
	retries     int
	parallel    int
	onFailure   string
	grace       time.Duration
	minBackoff  time.Duration
	maxBackoff  time.Duration
	idleTimeout time.Duration
	logLevel    string
	logFormat   string
}

const watchSynopsis = `watch URL --repo R [--repo R2] [--ref PATTERN] [flags]

Follows a node's /v1/events stream (URL is a node's or load balancer's base
URL, e.g. http://localhost:8080) and prints each change, one line each.

With --exec CMD, runs "sh -c CMD" per change with REFCAST_REPO, REFCAST_REF,
REFCAST_OLD, REFCAST_NEW, REFCAST_KIND, REFCAST_PUSHER, REFCAST_CURSOR,
REFCAST_FORCED and REFCAST_EVENT_COUNT set and the event JSON on stdin (with
--debounce, a JSON array of the repo's events of one window). A reset (the
node cannot replay what was missed) runs it once with REFCAST_KIND=reset and
the snapshot on stdin. The command's output goes to stderr.

The token is read from REFCAST_TOKEN or --token-file, never from argv.
URL may also come from REFCAST_URL. See docs/watch.md.`

func runWatch(ctx context.Context, args []string, env Env) error {
	c, err := parseWatchFlags(args, env)
	if err != nil {
		return err
	}
	token := env.Getenv("REFCAST_TOKEN")
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return fmt.Errorf("read token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}

	stderr := &watch.SyncWriter{W: env.Stderr}
	log, err := newLogger(c.logLevel, c.logFormat, Env{Stdout: env.Stdout, Stderr: stderr, Stdin: env.Stdin, Getenv: env.Getenv})
	if err != nil {
		return err
	}
	var since string
	if c.state != "" {
		if since, err = watch.CheckState(c.state); err != nil {
			return err
		}
	}
	client, err := watch.NewClient(watch.ClientOptions{
		URL: c.url, Repos: c.repos, Refs: c.refs, Token: token, Since: since,
		MinBackoff: c.minBackoff, MaxBackoff: c.maxBackoff, IdleTimeout: idleOrOff(c.idleTimeout),
		Logger: log,
	})
	if err != nil {
		return usageError{msg: "watch: " + err.Error()}
	}
	cfg := watch.Config{
		Out: env.Stdout, JSON: c.json,
		Debounce: c.debounce, Parallel: c.parallel, Retries: retriesOrNone(c.retries), SkipFailed: c.onFailure == "skip",
		Grace: c.grace, StatePath: c.state, Since: since, Logger: log,
	}
	if c.exec != "" {
		cfg.Runner = &watch.ExecRunner{Command: c.exec, Environ: os.Environ(), Output: stderr}
	}
	err = watch.New(cfg).Run(ctx, client)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return nil
}

// parseWatchFlags declares watch's flags, parses the command line and the
// environment, and checks the combination.
func parseWatchFlags(args []string, env Env) (*watchConfig, error) {
	c := &watchConfig{}
	fs := newFlagSet("watch", watchSynopsis, env)
	fs.Var(&c.repos, "repo", "repo name or glob to follow (repeatable; required)")
	fs.Var(&c.refs, "ref", "ref pattern, e.g. 'refs/heads/*', '^refs/pull/*' excludes (repeatable; default every ref)")
	fs.BoolVar(&c.json, "json", false, "print each event as one JSON object per line, as received")
	fs.StringVar(&c.exec, "exec", "", "command run with sh -c per change (per repo and window with --debounce)")
	fs.DurationVar(&c.debounce, "debounce", 0, "coalesce a repo's events within this window into one --exec run (0: one run per event)")
	fs.StringVar(&c.state, "state", "", "file storing the cursor of the last handled event; a restart resumes from it")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the access token (else REFCAST_TOKEN)")
	fs.IntVar(&c.retries, "retries", watch.DefaultRetries, "retries of a failed --exec run, with exponential backoff (0: none)")
	fs.IntVar(&c.parallel, "parallel", watch.DefaultParallel, "--exec runs of different repos at the same time (one repo's runs never overlap)")
	fs.StringVar(&c.onFailure, "on-failure", "exit", "when a run still fails after --retries: exit (non-zero; the state stays before it) or skip")
	fs.DurationVar(&c.grace, "grace", watch.DefaultGrace, "on SIGINT/SIGTERM, wait this long for running commands before terminating them")
	fs.DurationVar(&c.minBackoff, "min-backoff", watch.DefaultMinBackoff, "first reconnect delay when the node sent no retry: hint")
	fs.DurationVar(&c.maxBackoff, "max-backoff", watch.DefaultMaxBackoff, "longest reconnect delay (reconnects never give up)")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", watch.DefaultIdleTimeout, "reconnect when the node sent nothing, not even a heartbeat, for this long (0: never)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	pos, err := parseInterspersed(fs, args, env)
	if err != nil {
		return nil, err
	}
	switch len(pos) {
	case 0:
		c.url = env.Getenv("REFCAST_URL")
	case 1:
		c.url = pos[0]
	default:
		return nil, usageError{msg: fmt.Sprintf("watch: unexpected argument %q", pos[1])}
	}
	if c.url == "" {
		return nil, usageError{msg: "watch: the node URL is required (refcast watch URL --repo R)"}
	}
	if len(c.repos) == 0 {
		return nil, usageError{msg: "watch: at least one --repo is required"}
	}
	switch c.onFailure {
	case "exit", "skip":
	default:
		return nil, usageError{msg: fmt.Sprintf("watch: --on-failure must be exit or skip, got %q", c.onFailure)}
	}
	if c.debounce < 0 || c.grace < 0 || c.retries < 0 || c.parallel < 1 {
		return nil, usageError{msg: "watch: --debounce, --grace and --retries must not be negative, --parallel at least 1"}
	}
	if c.debounce > 0 && c.exec == "" {
		return nil, usageError{msg: "watch: --debounce applies to --exec runs; set --exec"}
	}
	return c, nil
}

// idleOrOff maps the flag's 0 ("never") to the option's "disabled".
func idleOrOff(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// retriesOrNone maps the flag's 0 ("none") to the option's "none".
func retriesOrNone(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
