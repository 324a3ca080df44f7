package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/redis"
	"github.com/refcast/refcast/hook"
)

// maxHookInput bounds what a hook reads from git: 10,000 updates of the
// longest refs fit many times over; a mirror push beyond it is cut into
// pushes by hook.BuildPushes, not here.
const maxHookInput = 64 << 20

// hookFlushTimeout bounds `refcast hook flush` when --timeout is not set:
// a manual flush may have a backlog to send.
const hookFlushTimeout = time.Minute

const hookUsage = `Usage:
  refcast hook post-receive [flags]            (git runs this; reads "<old> <new> <ref>" lines)
  refcast hook reference-transaction STATE [flags]
  refcast hook flush [flags]                   republish spooled pushes, in order

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
  --timeout D       bound on flushing and publishing (default 2s; flush: 1m)
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

func (f *hookFlags) set(name string) bool {
	set := false
	f.fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// hookSettings is everything a hook run uses, resolved from flags,
// environment and git config.
type hookSettings struct {
	url, token, redis string
	partitions        int
	timeout           time.Duration
	enrichBudget      time.Duration
	spool             string
	pusher            string
	repoName          string
}

// hookPick returns the first non-empty value.
func hookPick(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func (f *hookFlags) resolve(env Env, repo *hook.Repo, cfg hook.Config, needName bool) (hookSettings, error) {
	var s hookSettings
	flagOr := func(name, flagVal, envName, cfgKey string) string {
		if f.set(name) {
			return flagVal
		}
		return hookPick(env.Getenv(envName), cfg.Get(cfgKey))
	}
	s.url = flagOr("url", f.url, "REFCAST_URL", "url")
	s.redis = flagOr("redis", f.redis, "REFCAST_REDIS", "redis")
	if s.url != "" && s.redis != "" {
		return s, usageError{msg: "hook: both a node URL and a Redis URL are configured (flags, REFCAST_URL/REFCAST_REDIS, git config refcast.url/refcast.redis): keep one"}
	}
	s.token = hookPick(env.Getenv("REFCAST_TOKEN"), cfg.Get("token"))
	durations := []struct {
		name, envName, cfgKey string
		flagVal               time.Duration
		dst                   *time.Duration
	}{
		{"timeout", "REFCAST_TIMEOUT", "timeout", f.timeout, &s.timeout},
		{"enrich-budget", "REFCAST_ENRICH_BUDGET", "enrichbudget", f.enrichBudget, &s.enrichBudget},
	}
	for _, d := range durations {
		if f.set(d.name) {
			*d.dst = d.flagVal
			continue
		}
		if v := hookPick(env.Getenv(d.envName), cfg.Get(d.cfgKey)); v != "" {
			dur, err := time.ParseDuration(v)
			if err != nil {
				return s, usageError{msg: fmt.Sprintf("hook: --%s: %v", d.name, err)}
			}
			*d.dst = dur
		}
	}
	if f.set("partitions") {
		s.partitions = f.partitions
	} else if v := hookPick(env.Getenv("REFCAST_PARTITIONS"), cfg.Get("partitions")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return s, usageError{msg: fmt.Sprintf("hook: --partitions: %v", err)}
		}
		s.partitions = n
	}
	s.spool = flagOr("spool", f.spool, "REFCAST_SPOOL", "spool")
	if s.spool == "" && repo != nil {
		s.spool = filepath.Join(repo.CommonDir, hook.DefaultSpoolName)
	}
	s.pusher = hookPick(f.pusher, env.Getenv("REFCAST_PUSHER"), env.Getenv("GL_USERNAME"), env.Getenv("GITEA_PUSHER_NAME"), env.Getenv("REMOTE_USER"))
	if !needName {
		return s, nil
	}
	in := hook.NameInput{
		Flag:    f.repo,
		Config:  cfg.Get("repo"),
		Env:     env.Getenv("REFCAST_REPO"),
		Hosting: env.Getenv("GL_PROJECT_PATH"),
		Root:    flagOr("repo-root", f.repoRoot, "REFCAST_REPO_ROOT", "root"),
		Path:    repo.Path,
	}
	rules := []string(f.repoMap)
	if len(rules) == 0 {
		if v := env.Getenv("REFCAST_REPO_MAP"); v != "" {
			rules = strings.Split(strings.TrimSpace(v), "\n")
		} else {
			rules = cfg["repomap"]
		}
	}
	for _, r := range rules {
		rule, err := hook.ParseNameRule(strings.TrimSpace(r))
		if err != nil {
			return s, usageError{msg: "hook: " + err.Error()}
		}
		in.Rules = append(in.Rules, rule)
	}
	name, _, err := hook.ResolveRepoName(in)
	if err != nil {
		return s, usageError{msg: "hook: " + err.Error()}
	}
	s.repoName = name
	return s, nil
}

// publisher builds the configured destination; nil when none is.
func (s *hookSettings) publisher() (hook.Publisher, func()) {
	switch {
	case s.url != "":
		return &hook.HTTPPublisher{URL: s.url, Token: s.token}, func() {}
	case s.redis != "":
		p := &hookRedisPublisher{url: s.redis, opts: redis.Options{Partitions: s.partitions}}
		return p, p.close
	}
	return nil, func() {}
}

// hookRedisPublisher opens the Redis bus on first use, so a hook that only
// flushes an empty spool never connects. Open failures are retryable (the
// push is spooled), whatever their cause: a wrong URL is fixed by
// configuration, not by changing the push.
type hookRedisPublisher struct {
	url  string
	opts redis.Options
	b    *redis.Bus
}

func (p *hookRedisPublisher) Publish(ctx context.Context, push *bus.Push) error {
	if p.b == nil {
		b, err := redis.Open(ctx, p.url, p.opts)
		if err != nil {
			return errors.New(err.Error()) // drop bus.ErrInvalid: the push is fine
		}
		p.b = b
	}
	return hook.BusPublisher{Bus: p.b}.Publish(ctx, push)
}

func (p *hookRedisPublisher) close() {
	if p.b != nil {
		_ = p.b.Close()
	}
}

func hookLogger(env Env) *slog.Logger {
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
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
	switch sub {
	case hook.ModePostReceive:
		if len(pos) > 0 {
			return usageError{msg: fmt.Sprintf("hook post-receive: unexpected argument %q", pos[0])}
		}
		return runPostReceive(ctx, f, env)
	case hook.ModeReferenceTransaction:
		if len(pos) != 1 {
			return usageError{msg: "hook reference-transaction: want exactly one argument, the state git passes (prepared, committed, aborted)"}
		}
		return runReferenceTransaction(ctx, f, pos[0], env)
	case "flush":
		if len(pos) > 0 {
			return usageError{msg: fmt.Sprintf("hook flush: unexpected argument %q", pos[0])}
		}
		return runHookFlush(ctx, f, env)
	}
	return usageError{msg: fmt.Sprintf("hook: unknown hook %q (want post-receive, reference-transaction or flush)", sub)}
}

// readHookInput reads git's stdin and parses it; a malformed line is
// reported as "refcast hook: line N: ..." and exits 2.
func readHookInput(env Env, mode hook.ParseMode) ([]bus.RefUpdate, error) {
	data, err := io.ReadAll(io.LimitReader(env.Stdin, maxHookInput+1))
	if err != nil {
		return nil, fmt.Errorf("hook: read standard input: %w", err)
	}
	if len(data) > maxHookInput {
		fmt.Fprintf(env.Stderr, "refcast hook: standard input larger than %d bytes\n", maxHookInput)
		return nil, exitError{code: 2}
	}
	ups, err := hook.ParseUpdates(bytes.NewReader(data), mode)
	if err != nil {
		fmt.Fprintf(env.Stderr, "refcast hook: %v\n", err)
		return nil, exitError{code: 2}
	}
	return ups, nil
}

func runPostReceive(ctx context.Context, f *hookFlags, env Env) error {
	ups, err := readHookInput(env, hook.PostReceive)
	if err != nil || len(ups) == 0 {
		return err
	}
	return hookPublishUpdates(ctx, f, env, hook.SourcePostReceive, nil, ups)
}

func runReferenceTransaction(ctx context.Context, f *hookFlags, state string, env Env) error {
	lines, err := readHookInput(env, hook.ReferenceTransaction)
	if err != nil {
		if state == "prepared" {
			// A non-zero exit here would abort the user's transaction.
			return nil
		}
		return err
	}
	needsRepo := false
	for _, u := range lines {
		needsRepo = needsRepo || bus.IsZeroID(u.Old) || bus.IsZeroID(u.New)
	}
	switch state {
	case "prepared", "aborted":
		if !needsRepo {
			return nil
		}
		ctx, cancel := context.WithTimeout(ctx, hook.DefaultTimeout)
		defer cancel()
		repo, err := hook.OpenRepo(ctx, "", "")
		if err == nil {
			if state == "prepared" {
				err = repo.PrepareTransaction(ctx, lines)
			} else {
				err = repo.AbortTransaction(ctx, lines)
			}
		}
		if err != nil {
			fmt.Fprintf(env.Stderr, "refcast hook: warning: reference-transaction %s: %v\n", state, err)
		}
		return nil // never abort a transaction for refcast's sake
	case "committed":
		if len(lines) == 0 {
			return nil
		}
		return hookPublishUpdates(ctx, f, env, hook.SourceReferenceTransaction, lines, nil)
	}
	return nil // a state this version does not know
}

// hookPublishUpdates is the common tail of both hooks: find the repository and
// its settings, enrich, publish or spool. For reference-transaction, txn
// holds the raw lines to reconcile with the prepared state first.
func hookPublishUpdates(ctx context.Context, f *hookFlags, env Env, source string, txn, ups []bus.RefUpdate) error {
	repo, err := hook.OpenRepo(ctx, "", "")
	if err != nil {
		return usageError{msg: "hook: " + err.Error()}
	}
	cfg, err := repo.Config(ctx)
	if err != nil {
		return usageError{msg: "hook: " + err.Error()}
	}
	if m := cfg.Get("mode"); m != "" && m != source {
		return nil // the other mode is installed and publishes these updates
	}
	s, err := f.resolve(env, repo, cfg, true)
	if err != nil {
		return err
	}
	if txn != nil {
		if ups, err = repo.CommitTransaction(ctx, txn); err != nil {
			fmt.Fprintf(env.Stderr, "refcast hook: warning: reference-transaction: %v\n", err)
		}
		if len(ups) == 0 {
			return nil
		}
	}
	now := time.Now()
	repo.Enrich(ctx, ups, hook.EnrichOptions{Budget: s.enrichBudget})
	pushes := hook.BuildPushes(hook.NewPushID(now), s.repoName, hookSanitizePusher(s.pusher), source, now, ups)
	for _, p := range pushes {
		if err := p.Validate(); err != nil {
			return usageError{msg: "hook: " + err.Error()}
		}
	}
	log := hookLogger(env)
	sp, err := hook.OpenSpool(s.spool, log)
	if err != nil {
		return fmt.Errorf("hook: %w: updates not delivered", err)
	}
	pub, closePub := s.publisher()
	defer closePub()
	d, err := hook.Deliver(ctx, pub, sp, pushes, s.timeout, log)
	if err != nil {
		fmt.Fprintf(env.Stderr, "refcast hook: error: %v: %d update(s) NOT delivered and NOT spooled\n", err, len(ups))
		return exitError{code: 1}
	}
	hookReportDelivery(env, d, sp.Dir())
	return nil
}

// hookSanitizePusher drops a pusher name the bus would refuse rather than lose
// the push over it.
func hookSanitizePusher(s string) string {
	p := bus.Push{ID: "x", Repo: "x", Pusher: s, Time: time.Unix(1, 0), Seed: true}
	if p.Validate() != nil {
		return ""
	}
	return s
}

func hookReportDelivery(env Env, d hook.Delivery, dir string) {
	switch {
	case d.Err == nil:
	case !hook.Retryable(d.Err):
		fmt.Fprintf(env.Stderr, "refcast hook: warning: push rejected, not retried: %v\n", d.Err)
	case len(d.Spooled) > 0:
		fmt.Fprintf(env.Stderr, "refcast hook: warning: %v; push spooled to %s (published on the next push or 'refcast hook flush')\n", d.Err, dir)
	default:
		fmt.Fprintf(env.Stderr, "refcast hook: warning: %v\n", d.Err)
	}
}

func runHookFlush(ctx context.Context, f *hookFlags, env Env) error {
	var (
		repo *hook.Repo
		cfg  = hook.Config{}
	)
	if r, err := hook.OpenRepo(ctx, "", ""); err == nil {
		repo = r
		if cfg, err = r.Config(ctx); err != nil {
			return usageError{msg: "hook flush: " + err.Error()}
		}
	}
	s, err := f.resolve(env, repo, cfg, false)
	if err != nil {
		return err
	}
	if s.spool == "" {
		return usageError{msg: "hook flush: no spool: give --spool DIR or run inside the repository"}
	}
	if s.timeout == 0 {
		s.timeout = hookFlushTimeout
	}
	pub, closePub := s.publisher()
	defer closePub()
	if pub == nil {
		return usageError{msg: "hook flush: no destination: give --url or --redis (or their environment variables or git config)"}
	}
	sp, err := hook.OpenSpool(s.spool, hookLogger(env))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := sp.Flush(ctx, pub)
	fmt.Fprintf(env.Stdout, "refcast hook flush: %s: published %d, quarantined %d, pending %d\n", s.spool, res.Published, res.Quarantined, res.Left)
	if err != nil {
		return fmt.Errorf("hook flush: %w", err)
	}
	return nil
}
