package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/refcast/refcast/bus"
)

// MaxInput bounds what a hook reads from git: 10,000 updates of the
// longest refs fit many times over; a mirror push beyond it is cut into
// pushes by BuildPushes, not here.
const MaxInput = 64 << 20

// DefaultFlushTimeout bounds Runner.Flush when no timeout is configured: a
// manual flush may have a backlog to send.
const DefaultFlushTimeout = time.Minute

// DefaultSyncTimeout bounds Runner.Sync when no timeout is configured: a
// seed of many refs is one large publish.
const DefaultSyncTimeout = 30 * time.Second

// Runner runs the hook's commands: the two git hooks, flush, sync and
// check. It is one invocation's worth of state; the command builds it from
// its flags and process and calls one method.
type Runner struct {
	Flags  Flags
	Getenv func(string) string // the process environment; nil: empty
	// LookupEnv is the same environment telling a variable set but empty
	// from one not set (GIT_CONFIG_GLOBAL= means no global git config).
	// nil: Getenv, empty counting as not set.
	LookupEnv func(string) (string, bool)
	Stdin     io.Reader // git's input to the hook
	Stdout    io.Writer
	Stderr    io.Writer
	// OpenBus opens a Redis destination; nil refuses one.
	OpenBus BusOpener
	// Git is the git binary; "" for DefaultGit.
	Git string
	// FlushCommand is the command line of `refcast hook flush --wait` with
	// this run's destination flags; a hook that spools a push starts it
	// in the background (see Spool.StartFlusher). Empty: none is started.
	FlushCommand []string
	// Publisher, when set, takes every push, whatever the repository's
	// settings name (refcast serve --queue: the node's own bus).
	Publisher Publisher

	// What a drainer sets to run a queued push as its hook would have run
	// (see DrainQueue); zero in a hook process.
	dir      string          // the hook's working directory; "": this process's
	pushID   string          // "": a new one (NewPushID)
	now      time.Time       // when the hook ran; zero: now
	flushEnv []string        // the background flush's environment; nil: this process's
	pubs     *publisherCache // destinations kept open across pushes; nil: one per run
}

func (r *Runner) env(name string) string {
	if r.Getenv == nil {
		return ""
	}
	return r.Getenv(name)
}

func (r *Runner) lookupEnv(name string) (string, bool) {
	if r.LookupEnv != nil {
		return r.LookupEnv(name)
	}
	v := r.env(name)
	return v, v != ""
}

func (r *Runner) warnf(format string, args ...any) {
	fmt.Fprintf(r.Stderr, "refcast hook: "+format+"\n", args...)
}

// logger writes the spool's warnings to the hook's standard error, which
// git shows the pusher: level warn, no timestamps.
func (r *Runner) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(r.Stderr, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// readInput reads git's standard input and parses it; a malformed line is
// reported as "refcast hook: line N: ..." and exits 2.
func (r *Runner) readInput(mode ParseMode) ([]bus.RefUpdate, error) {
	data, err := io.ReadAll(io.LimitReader(r.Stdin, MaxInput+1))
	if err != nil {
		return nil, fmt.Errorf("hook: read standard input: %w", err)
	}
	if len(data) > MaxInput {
		r.warnf("standard input larger than %d bytes", MaxInput)
		return nil, ExitStatus(2)
	}
	ups, err := ParseUpdates(bytes.NewReader(data), mode)
	if err != nil {
		r.warnf("%v", err)
		return nil, ExitStatus(2)
	}
	return ups, nil
}

// hookRepo finds the repository git runs the hook in: from GIT_DIR and
// the files it names when that is certain (see openRepoDirect), else by
// git rev-parse (OpenRepo).
func (r *Runner) hookRepo(ctx context.Context) (*Repo, error) {
	if r.direct() {
		if repo, err := openRepoDirect(r.lookupEnv, r.gitBin()); err == nil {
			return repo, nil
		}
	}
	return OpenRepo(ctx, r.dir, r.Git)
}

// direct reports whether the hook may read what git hands it without
// asking git: yes unless REFCAST_HOOK_DIRECT says otherwise ("false", or
// anything not a boolean: the safe side).
func (r *Runner) direct() bool {
	v := r.env("REFCAST_HOOK_DIRECT")
	on, err := strconv.ParseBool(v)
	return v == "" || err == nil && on
}

// hookConfig is repo.Config read from the files git would read when that
// is certain (see Repo.configDirect), else from git config.
func (r *Runner) hookConfig(ctx context.Context, repo *Repo) (Config, error) {
	if r.direct() {
		if cfg, err := repo.configDirect(r.lookupEnv); err == nil {
			return cfg, nil
		}
	}
	return repo.Config(ctx)
}

func (r *Runner) gitBin() string {
	if r.Git == "" {
		return DefaultGit
	}
	return r.Git
}

// openHookRepo finds the repository git runs the hook in. Outside one the
// error says how the hook is meant to run, rather than what git said.
func (r *Runner) openHookRepo(ctx context.Context, cmd string) (*Repo, error) {
	repo, err := r.hookRepo(ctx)
	if err == nil {
		return repo, nil
	}
	if r.env("GIT_DIR") == "" {
		return nil, usagef("%s: not in a git repository (GIT_DIR is unset): git runs this from a repository's hooks; install it there with 'refcast install-hook PATH --url URL'", cmd)
	}
	return nil, usagef("%s: %v", cmd, err)
}

// PostReceive publishes the updates git hands a post-receive hook.
func (r *Runner) PostReceive(ctx context.Context) error {
	ups, err := r.readInput(PostReceive)
	if err != nil || len(ups) == 0 {
		return err
	}
	return r.publishUpdates(ctx, SourcePostReceive, nil, ups)
}

// ReferenceTransaction handles one call of the reference-transaction hook
// in the given state. It never fails "prepared" (that would abort the
// user's transaction) and publishes only on "committed".
func (r *Runner) ReferenceTransaction(ctx context.Context, state string) error {
	lines, err := r.readInput(ReferenceTransaction)
	if err != nil {
		if state == "prepared" {
			return nil // a non-zero exit here would abort the user's transaction
		}
		return err
	}
	switch state {
	case "prepared", "aborted":
		r.recordTransaction(ctx, state, lines)
		return nil // never abort a transaction for refcast's sake
	case "committed":
		if len(lines) == 0 {
			return nil
		}
		return r.publishUpdates(ctx, SourceReferenceTransaction, lines, nil)
	}
	return nil // a state this version does not know
}

// recordTransaction keeps (prepared) or drops (aborted) what the committed
// state needs to know about created and deleted refs. Failures are
// warnings.
func (r *Runner) recordTransaction(ctx context.Context, state string, lines []bus.RefUpdate) {
	needsRepo := false
	for _, u := range lines {
		needsRepo = needsRepo || bus.IsZeroID(u.Old) || bus.IsZeroID(u.New)
	}
	if !needsRepo {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	repo, err := r.hookRepo(ctx)
	if err == nil {
		if state == "prepared" {
			err = repo.PrepareTransaction(ctx, lines)
		} else {
			err = repo.AbortTransaction(ctx, lines)
		}
	}
	if err != nil {
		r.warnf("warning: reference-transaction %s: %v", state, err)
	}
}

// publishUpdates is the common tail of both hooks: find the repository and
// its settings, enrich, publish or spool. For reference-transaction, txn
// holds the raw lines to reconcile with the prepared state first.
func (r *Runner) publishUpdates(ctx context.Context, source string, txn, ups []bus.RefUpdate) error {
	begun := time.Now()
	repo, err := r.openHookRepo(ctx, "hook")
	if err != nil {
		return r.mayPass(err)
	}
	for _, lines := range [][]bus.RefUpdate{txn, ups} {
		if err := CheckObjectFormat(lines, repo.ObjectFormat); err != nil {
			r.warnf("%v", err)
			return ExitStatus(2)
		}
	}
	cfg, err := r.hookConfig(ctx, repo)
	if err != nil {
		return r.mayPass(usagef("hook: %v", err))
	}
	if m := cfg.Get("mode"); m != "" && m != source {
		return nil // the other mode is installed and publishes these updates
	}
	s, err := Resolve(Sources{Flags: r.Flags, Getenv: r.Getenv, Config: cfg}, repo, true)
	if err != nil {
		return err
	}
	if r.dir != "" && s.Spool != "" && !filepath.IsAbs(s.Spool) {
		// A relative spool is the hook's working directory's, as for a
		// hook process; a drainer runs elsewhere.
		s.Spool = filepath.Join(r.dir, s.Spool)
	}
	if txn != nil {
		if ups, err = repo.CommitTransaction(ctx, txn); err != nil {
			r.warnf("warning: reference-transaction: %v", err)
		}
		if len(ups) == 0 {
			return nil
		}
	}
	now, id := r.now, r.pushID
	if now.IsZero() {
		now = time.Now()
	}
	if id == "" {
		id = NewPushID(now)
	}
	// REFCAST_HOOK_DIRECT=false: loose objects too are read through git.
	repo.Enrich(ctx, ups, EnrichOptions{Budget: s.EnrichBudget, NoLoose: !r.direct()})
	head := r.gitState(ctx, repo, ups)
	pushes := BuildPushes(id, s.RepoName, sanitizePusher(s.Pusher), source, now, ups)
	// A new repository's first push lists every ref it has: marked whole,
	// it completes the repo's state for git clients on its own.
	whole := head != "" && len(pushes) == 1 && repo.HoldsOnly(ups)
	for _, p := range pushes {
		p.Head, p.Whole = head, whole
		if err := p.Validate(); err != nil {
			return usagef("hook: %v", err)
		}
	}
	r.waitQueued(ctx, repo, s.Timeout, begun)
	return r.deliver(ctx, s, repo, pushes, len(ups))
}

// mayPass is how a drainer takes a failure to read the repository or its
// config (git could not start, say): worth retrying while the hook's
// directory is there, for good (the usage error) once it is gone. A hook
// process reports it as it always did.
func (r *Runner) mayPass(err error) error {
	if r.pushID == "" || r.dir == "" {
		return err
	}
	if _, statErr := os.Stat(r.dir); statErr != nil {
		return err
	}
	return fmt.Errorf("retryable: %s", err.Error())
}

func (r *Runner) deliver(ctx context.Context, s Settings, repo *Repo, pushes []*bus.Push, n int) error {
	log := r.logger()
	sp, err := OpenSpool(s.Spool, log)
	if err != nil {
		return fmt.Errorf("hook: %w: updates not delivered", err)
	}
	pub, closePub, err := r.publisher(&s)
	if err != nil {
		return err
	}
	defer closePub()
	d, err := Deliver(ctx, pub, sp, pushes, s.Timeout, log)
	if err != nil {
		r.warnf("error: %v: %d update(s) NOT delivered and NOT spooled", err, n)
		return ExitStatus(1)
	}
	switch {
	case d.Err == nil:
		r.completeGitState(ctx, s, repo, pub, pushes)
	case !Retryable(d.Err):
		r.warnf("warning: push rejected, not retried: %v", d.Err)
	case len(d.Spooled) > 0 && r.startFlusher(s, sp):
		r.warnf("warning: %v; push spooled to %s (a background flush publishes it when the destination answers; log: %s)", d.Err, sp.Dir(), FlushLogName)
	case len(d.Spooled) > 0:
		r.warnf("warning: %v; push spooled to %s (published on the next push or 'refcast hook flush')", d.Err, sp.Dir())
	default:
		r.warnf("warning: %v", d.Err)
	}
	return nil
}

// startFlusher starts the background flush of sp unless turned off,
// unsupported or already running (then it retries on its own). It reports
// whether one runs now; failing to start one is a warning, the push is
// spooled either way.
func (r *Runner) startFlusher(s Settings, sp *Spool) bool {
	if s.NoBackground || len(r.FlushCommand) == 0 {
		return false
	}
	if sp.FlusherRunning() {
		return true
	}
	started, err := sp.StartFlusher(r.FlushCommand, r.dir, r.flushEnv, r.dir != "")
	if err != nil {
		r.warnf("warning: %v", err)
	}
	return started
}

// sanitizePusher drops a pusher name the bus would refuse rather than lose
// the push over it.
func sanitizePusher(s string) string {
	p := bus.Push{ID: "x", Repo: "x", Pusher: s, Time: time.Unix(1, 0), Seed: true}
	if p.Validate() != nil {
		return ""
	}
	return s
}

// settingsHere resolves the settings of the repository in the working
// directory, or from flags and environment alone outside one.
func (r *Runner) settingsHere(ctx context.Context, cmd string, needName bool) (Settings, *Repo, error) {
	var repo *Repo
	cfg := Config{}
	if rp, err := OpenRepo(ctx, "", r.Git); err == nil {
		repo = rp
		if cfg, err = rp.Config(ctx); err != nil {
			return Settings{}, nil, usagef("%s: %v", cmd, err)
		}
	}
	s, err := Resolve(Sources{Flags: r.Flags, Getenv: r.Getenv, Config: cfg}, repo, needName && repo != nil)
	return s, repo, err
}

// Flush republishes what the spool holds, in order, and prints a summary.
func (r *Runner) Flush(ctx context.Context) error {
	s, sp, pub, closePub, err := r.openFlush(ctx, r.logger())
	if err != nil {
		return err
	}
	defer closePub()
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	res, err := sp.Flush(ctx, pub)
	fmt.Fprintf(r.Stdout, "refcast hook flush: %s: published %d, quarantined %d, pending %d\n", s.Spool, res.Published, res.Quarantined, res.Left)
	if err != nil {
		return fmt.Errorf("hook flush: %w", err)
	}
	return nil
}

// FlushWait is `hook flush --wait`, the background flush a hook starts:
// it retries until the spool is empty (see Spool.FlushWait), each try
// bounded by the timeout. Another flusher of the same spool already
// running is success: that one finishes the job. Its output, a log with
// timestamps, goes to the spool's FlushLogName.
func (r *Runner) FlushWait(ctx context.Context) error {
	log := slog.New(slog.NewTextHandler(r.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, sp, pub, closePub, err := r.openFlush(ctx, log)
	if err != nil {
		return err
	}
	defer closePub()
	res, err := sp.FlushWait(ctx, pub, WaitOptions{PerTry: s.Timeout})
	switch {
	case errors.Is(err, ErrFlusherRunning):
		log.Info("another background flush is running", slog.String("spool", s.Spool))
		return nil
	case err != nil:
		log.Error("background flush stopped; the spool waits for the next push or 'refcast hook flush'",
			slog.String("spool", s.Spool), slog.Int("published", res.Published), slog.Int("pending", res.Left), slog.Any("error", err))
		return ExitStatus(1)
	}
	log.Info("background flush done", slog.String("spool", s.Spool), slog.Int("published", res.Published), slog.Int("quarantined", res.Quarantined))
	return nil
}

// openFlush resolves what both flushes need: settings, spool, publisher.
// closePub must be called when err is nil.
func (r *Runner) openFlush(ctx context.Context, log *slog.Logger) (Settings, *Spool, Publisher, func(), error) {
	s, _, err := r.settingsHere(ctx, "hook flush", false)
	if err != nil {
		return s, nil, nil, nil, err
	}
	if s.Spool == "" {
		return s, nil, nil, nil, usagef("hook flush: no spool: give --spool DIR or run inside the repository")
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultFlushTimeout
	}
	pub, closePub, err := s.publisher(r.OpenBus)
	if err != nil {
		return s, nil, nil, nil, err
	}
	if pub == nil {
		closePub()
		return s, nil, nil, nil, usagef("hook flush: no destination: give --url or --redis (or their environment variables or git config)")
	}
	sp, err := OpenSpool(s.Spool, log)
	if err != nil {
		closePub()
		return s, nil, nil, nil, err
	}
	return s, sp, pub, closePub, nil
}

// errNoDestination is the misuse of a command that must publish somewhere.
func errNoDestination(cmd string) error {
	return usagef("%s: no destination: give --url or --redis (or REFCAST_URL/REFCAST_REDIS, git config refcast.url/refcast.redis)", cmd)
}
