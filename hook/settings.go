package hook

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Flags are the hook settings given on the command line. A nil pointer (or
// an empty Repo, Pusher or RepoMap) means "not given", so an explicit empty
// flag (--url "") still overrides the environment and git config.
type Flags struct {
	Repo         string // --repo
	URL          *string
	Redis        *string
	Pusher       string
	Spool        *string
	RepoRoot     *string
	RepoMap      []string // --repo-map, repeatable
	Timeout      *time.Duration
	EnrichBudget *time.Duration
	Partitions   *int
}

// Settings is everything one hook run uses. Resolve fills it from three
// sources, each setting from the first that has it:
//
//	setting        flag             environment             git config
//	URL            --url            REFCAST_URL             refcast.url
//	Token          (never a flag)   REFCAST_TOKEN           refcast.token
//	Redis          --redis          REFCAST_REDIS           refcast.redis
//	Partitions     --partitions     REFCAST_PARTITIONS      refcast.partitions
//	Timeout        --timeout        REFCAST_TIMEOUT         refcast.timeout
//	EnrichBudget   --enrich-budget  REFCAST_ENRICH_BUDGET   refcast.enrichBudget
//	Spool          --spool          REFCAST_SPOOL           refcast.spool, else <common dir>/refcast-spool
//	Pusher         --pusher         REFCAST_PUSHER, GL_USERNAME, GITEA_PUSHER_NAME, REMOTE_USER
//	NoBackground   (no flag)        REFCAST_FLUSH_BACKGROUND=false  refcast.flushBackground=false
//	RepoName       see NameInput: --repo, refcast.repo, REFCAST_REPO, GL_PROJECT_PATH,
//	               then the first matching --repo-map / REFCAST_REPO_MAP / refcast.repoMap rule,
//	               then the default rule with --repo-root / REFCAST_REPO_ROOT / refcast.root
//
// A flag wins even when empty; the environment and git config only when
// non-empty. The token is never a flag: command lines are visible to every
// user of the machine.
type Settings struct {
	URL, Token, Redis string
	Partitions        int
	Timeout           time.Duration // 0: the caller's default
	EnrichBudget      time.Duration // 0: DefaultEnrichBudget; negative: off
	Spool             string
	Pusher            string
	RepoName          string // empty unless Resolve was asked for it
	// NoBackground turns off the background flush a hook starts when it
	// spools a push (on by default).
	NoBackground bool
}

// Sources are what Resolve reads. Getenv may be nil (nothing set); Config
// may be nil (outside a repository).
type Sources struct {
	Flags  Flags
	Getenv func(string) string
	Config Config
}

func (s Sources) env(name string) string {
	if s.Getenv == nil {
		return ""
	}
	return s.Getenv(name)
}

// pick returns the first non-empty value.
func pick(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// Resolve applies the precedence documented on Settings. repo may be nil
// outside a repository (then there is no default spool and no repo name);
// needName asks for RepoName, which needs repo. Every error is a
// *UsageError: the configuration, not the push, is wrong.
func Resolve(src Sources, repo *Repo, needName bool) (Settings, error) {
	var s Settings
	str := func(flag *string, envName, cfgKey string) string {
		if flag != nil {
			return *flag
		}
		return pick(src.env(envName), src.Config.Get(cfgKey))
	}
	s.URL = str(src.Flags.URL, "REFCAST_URL", "url")
	s.Redis = str(src.Flags.Redis, "REFCAST_REDIS", "redis")
	if s.URL != "" && s.Redis != "" {
		return s, usagef("hook: both a node URL and a Redis URL are configured (flags, REFCAST_URL/REFCAST_REDIS, git config refcast.url/refcast.redis): keep one")
	}
	s.Token = pick(src.env("REFCAST_TOKEN"), src.Config.Get("token"))
	var err error
	if s.Timeout, err = resolveDuration(src, "timeout", src.Flags.Timeout, "REFCAST_TIMEOUT", "timeout"); err != nil {
		return s, err
	}
	if s.EnrichBudget, err = resolveDuration(src, "enrich-budget", src.Flags.EnrichBudget, "REFCAST_ENRICH_BUDGET", "enrichbudget"); err != nil {
		return s, err
	}
	if src.Flags.Partitions != nil {
		s.Partitions = *src.Flags.Partitions
	} else if v, from := source(src, "REFCAST_PARTITIONS", "partitions"); v != "" {
		if s.Partitions, err = strconv.Atoi(v); err != nil {
			return s, usagef("hook: %s (--partitions): %q is not a whole number; use the deployment's partition count, like 16", from, v)
		}
	}
	s.Spool = str(src.Flags.Spool, "REFCAST_SPOOL", "spool")
	if s.Spool == "" && repo != nil {
		s.Spool = filepath.Join(repo.CommonDir, DefaultSpoolName)
	}
	if v := pick(src.env("REFCAST_FLUSH_BACKGROUND"), src.Config.Get("flushbackground")); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return s, usagef("hook: REFCAST_FLUSH_BACKGROUND / refcast.flushBackground must be true or false, got %q", v)
		}
		s.NoBackground = !on
	}
	s.Pusher = pick(src.Flags.Pusher, src.env("REFCAST_PUSHER"), src.env("GL_USERNAME"), src.env("GITEA_PUSHER_NAME"), src.env("REMOTE_USER"))
	if !needName {
		return s, nil
	}
	s.RepoName, err = resolveName(src, repo, str(src.Flags.RepoRoot, "REFCAST_REPO_ROOT", "root"))
	return s, err
}

func resolveDuration(src Sources, name string, flag *time.Duration, envName, cfgKey string) (time.Duration, error) {
	if flag != nil {
		return *flag, nil
	}
	v, from := source(src, envName, cfgKey)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, usagef("hook: %s (--%s): %q is not a duration; use a number with a unit, like 5s or 500ms", from, name, v)
	}
	return d, nil
}

// source returns the value of a setting from the environment, else git
// config, and names where it came from for error messages.
func source(src Sources, envName, cfgKey string) (v, from string) {
	if v := src.env(envName); v != "" {
		return v, envName
	}
	if v := src.Config.Get(cfgKey); v != "" {
		return v, "git config refcast." + cfgKey
	}
	return "", ""
}

func resolveName(src Sources, repo *Repo, root string) (string, error) {
	in := NameInput{
		Flag:    src.Flags.Repo,
		Config:  src.Config.Get("repo"),
		Env:     src.env("REFCAST_REPO"),
		Hosting: src.env("GL_PROJECT_PATH"),
		Root:    root,
	}
	if repo != nil {
		in.Path = repo.Path
	}
	rules := src.Flags.RepoMap
	if len(rules) == 0 {
		if v := src.env("REFCAST_REPO_MAP"); v != "" {
			rules = strings.Split(strings.TrimSpace(v), "\n")
		} else {
			rules = src.Config["repomap"]
		}
	}
	for _, r := range rules {
		rule, err := ParseNameRule(strings.TrimSpace(r))
		if err != nil {
			return "", usagef("hook: %v", err)
		}
		in.Rules = append(in.Rules, rule)
	}
	name, _, err := ResolveRepoName(in)
	if err != nil {
		return "", usagef("hook: %v", err)
	}
	return name, nil
}

// UsageError is misuse: a bad argument, malformed input from git, or a
// configuration that cannot work. Commands print it and exit 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// ExitStatus is an error whose message the hook has already written to
// its standard error; the command exits with this status and prints
// nothing more.
type ExitStatus int

func (e ExitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
