package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Install modes: the git hook refcast runs as. Exactly one is installed in
// a repository, so a push is never published twice.
const (
	ModePostReceive          = "post-receive"
	ModeReferenceTransaction = "reference-transaction"
)

// Modes lists the install modes.
var Modes = []string{ModePostReceive, ModeReferenceTransaction}

const (
	// scriptMarker identifies a hook script written by Install.
	scriptMarker = "# refcast-hook: installed by refcast install-hook"
	// previousSuffix is appended to the name of a hook that was there
	// before; the refcast script runs it first.
	previousSuffix = ".refcast-previous"
	// installStateName holds, in the common git dir, what Uninstall restores.
	installStateName = "refcast-install.json"
)

// InstallOptions says what to install.
type InstallOptions struct {
	// Mode is ModePostReceive (the default when empty) or
	// ModeReferenceTransaction.
	Mode string
	// Binary is the absolute path of the refcast binary the script runs.
	Binary string
	// Queue, when set, is the absolute path of a queue directory: the
	// script hands each push (reference-transaction: each committed
	// transaction of verified updates) to `refcast hook drain --queue DIR`
	// through it instead of running refcast (see DrainQueue).
	Queue string
	// Config is written into the repository's git config under "refcast."
	// (e.g. "url", "redis", "repo"); empty values are skipped. "mode" is
	// always written.
	Config map[string]string
}

// InstallResult says what Install did.
type InstallResult struct {
	Hook     string // the script's path
	Previous string // where an existing hook was moved, if any
	Changed  bool   // false when everything was already in place
}

// installState is what Uninstall needs to restore the repository.
type installState struct {
	// Config holds, for every refcast.* key Install set, the values it had
	// before (nil: unset).
	Config map[string][]string `json:"config"`
	// HadSection says whether a [refcast] section existed before.
	HadSection bool `json:"had_section"`
}

// Install writes the hook script into the repository's hooks directory
// (core.hooksPath honoured) and the configuration into its git config. An
// existing hook of the same name is kept as NAME.refcast-previous and run
// first, with the same standard input; for post-receive its exit status is
// the script's; for reference-transaction too, so it can still abort a
// transaction in the "prepared" state. Installing one mode removes the
// other mode's refcast script (restoring what it had chained). Installing
// twice changes nothing the second time.
func Install(ctx context.Context, r *Repo, opts InstallOptions) (InstallResult, error) {
	var res InstallResult
	mode := opts.Mode
	if mode == "" {
		mode = ModePostReceive
	}
	if !slices.Contains(Modes, mode) {
		return res, fmt.Errorf("unknown mode %q: want %s", mode, strings.Join(Modes, " or "))
	}
	if !filepath.IsAbs(opts.Binary) {
		return res, fmt.Errorf("binary path %q must be absolute", opts.Binary)
	}
	if opts.Queue != "" && !filepath.IsAbs(opts.Queue) {
		return res, fmt.Errorf("queue path %q must be absolute", opts.Queue)
	}
	hooks, err := r.hooksDir(ctx)
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(hooks, 0o755); err != nil {
		return res, fmt.Errorf("create hooks directory: %w", err)
	}

	// Configuration first, recording what it replaces.
	cfg := map[string]string{"mode": mode}
	for k, v := range opts.Config {
		if v != "" {
			cfg[strings.ToLower(k)] = v
		}
	}
	current, err := r.localConfig(ctx)
	if err != nil {
		return res, err
	}
	st, err := r.loadInstallState()
	if err != nil {
		return res, err
	}
	if st == nil {
		st = &installState{Config: map[string][]string{}, HadSection: len(current) > 0}
	}
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if slices.Equal(current[k], []string{cfg[k]}) {
			continue
		}
		if _, recorded := st.Config[k]; !recorded {
			st.Config[k] = current[k]
		}
		if err := r.saveInstallState(st); err != nil {
			return res, err
		}
		if _, err := r.run(ctx, nil, "config", "--local", "--replace-all", "refcast."+k, cfg[k]); err != nil {
			return res, fmt.Errorf("write git config refcast.%s: %w", k, err)
		}
		res.Changed = true
	}
	if _, err := os.Stat(r.installStatePath()); errors.Is(err, fs.ErrNotExist) {
		// Nothing was changed, ever: still remember the pre-install state so
		// Uninstall knows the section existed.
		if err := r.saveInstallState(st); err != nil {
			return res, err
		}
	}

	// The other mode's script goes, so only one mode publishes.
	for _, other := range Modes {
		if other != mode {
			removed, err := removeScript(filepath.Join(hooks, other))
			if err != nil {
				return res, err
			}
			res.Changed = res.Changed || removed
		}
	}

	// Then the script.
	res.Hook = filepath.Join(hooks, mode)
	script := hookScript(mode, opts.Binary, opts.Queue)
	old, err := os.ReadFile(res.Hook)
	switch {
	case err == nil && string(old) == script:
		if _, err := os.Stat(res.Hook + previousSuffix); err == nil {
			res.Previous = res.Hook + previousSuffix
		}
		return res, nil
	case err == nil && !isOurs(old):
		if _, err := os.Lstat(res.Hook + previousSuffix); err == nil {
			return res, fmt.Errorf("both %s and %s exist and neither is refcast's: move one away", res.Hook, res.Hook+previousSuffix)
		}
		if err := os.Rename(res.Hook, res.Hook+previousSuffix); err != nil {
			return res, fmt.Errorf("keep existing hook: %w", err)
		}
		res.Previous = res.Hook + previousSuffix
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return res, fmt.Errorf("read existing hook: %w", err)
	}
	if _, err := os.Stat(res.Hook + previousSuffix); err == nil {
		res.Previous = res.Hook + previousSuffix
	}
	if err := writeFileAtomic(hooks, mode, []byte(script)); err != nil {
		return res, fmt.Errorf("write hook: %w", err)
	}
	if err := os.Chmod(res.Hook, 0o755); err != nil {
		return res, fmt.Errorf("write hook: %w", err)
	}
	res.Changed = true
	return res, nil
}

// Uninstall removes what Install did: the refcast scripts go, chained
// hooks return to their names, and the refcast.* configuration Install set
// gets back its previous values (the [refcast] section is removed if it did
// not exist before). Keys the operator set by hand that Install did not
// touch (refcast.token, say) are left alone. Uninstalling what is not
// installed does nothing.
func Uninstall(ctx context.Context, r *Repo) (changed bool, err error) {
	hooks, err := r.hooksDir(ctx)
	if err != nil {
		return false, err
	}
	for _, mode := range Modes {
		removed, err := removeScript(filepath.Join(hooks, mode))
		if err != nil {
			return changed, err
		}
		changed = changed || removed
	}
	st, err := r.loadInstallState()
	if err != nil || st == nil {
		return changed, err
	}
	keys := make([]string, 0, len(st.Config))
	for k := range st.Config {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if _, err := r.run(ctx, nil, "config", "--local", "--unset-all", "refcast."+k); err != nil && exitCode(err) != 5 {
			return changed, fmt.Errorf("restore git config refcast.%s: %w", k, err)
		}
		for _, v := range st.Config[k] {
			if _, err := r.run(ctx, nil, "config", "--local", "--add", "refcast."+k, v); err != nil {
				return changed, fmt.Errorf("restore git config refcast.%s: %w", k, err)
			}
		}
		changed = true
	}
	if !st.HadSection {
		left, err := r.localConfig(ctx)
		if err != nil {
			return changed, err
		}
		if len(left) == 0 {
			// git config --unset leaves an empty [refcast] header behind.
			if _, err := r.run(ctx, nil, "config", "--local", "--remove-section", "refcast"); err != nil && exitCode(err) != 128 {
				return changed, fmt.Errorf("remove git config section refcast: %w", err)
			}
		}
	}
	if err := os.Remove(r.installStatePath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return changed, err
	}
	return changed, nil
}

// removeScript deletes a refcast script and puts back the hook it chained.
// Anything that is not a refcast script is left alone.
func removeScript(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read hook: %w", err)
	}
	if !isOurs(data) {
		return false, nil
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("remove hook: %w", err)
	}
	if err := os.Rename(path+previousSuffix, path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return true, fmt.Errorf("restore previous hook: %w", err)
	}
	return true, nil
}

func isOurs(script []byte) bool { return strings.Contains(string(script), "\n"+scriptMarker+"\n") }

// hookScript is the hook: it runs a chained previous hook (if present) with
// the same input, then refcast, and exits with the previous hook's status.
// Without a previous hook it just execs refcast, and starts no other
// process on the way: the hooks directory comes from $0 by parameter
// expansion, not $(dirname) (a fork and an exec: 5.3 ms each in dash on
// the 2-core test machine, 300 in a loop took 1.6 s against 6 ms; the
// scripts of earlier versions used it and still work, and install-hook
// rewrites them, since they carry the marker). git runs a hook by a path
// with a slash in it; $0 without one (sh post-receive, run by hand in the
// hooks directory) means the working directory, as dirname says.
//
// With a queue the script first tries to hand the push to the drainer
// (queueScript); where it cannot, it goes on as without one.
func hookScript(mode, binary, queue string) string {
	q := shellQuote(binary)
	head := `# Mode ` + mode + `. Undo with: refcast install-hook --uninstall <repository>
`
	if queue != "" {
		head = `# Mode ` + mode + `, queued to ` + queue + ` for 'refcast hook drain --queue'.
# Undo with: refcast install-hook --uninstall <repository>
`
	}
	return `#!/bin/sh
` + scriptMarker + `
` + head + `# A hook that was here before runs first, from ` + mode + previousSuffix + `.
case $0 in
*/*) prev="${0%/*}/` + mode + previousSuffix + `" ;;
*) prev="./` + mode + previousSuffix + `" ;;
esac
` + queueScript(binary, mode, queue) + `if [ ! -x "$prev" ]; then
	exec ` + q + ` hook ` + mode + ` "$@"
fi
in=$(mktemp "${TMPDIR:-/tmp}/refcast-hook.XXXXXX") || exit 1
trap 'rm -f "$in"' EXIT
cat >"$in"
"$prev" "$@" <"$in"
status=$?
` + q + ` hook ` + mode + ` "$@" <"$in"
exit $status
`
}

// queueScript is the part of a queue-mode script that writes the push
// into the queue (the format DrainQueue reads) with shell builtins only:
// no process starts, so the push waits for one dash and a few writes.
// It falls through to running refcast when a previous hook is chained
// (its input must be kept for two readers, which takes processes anyway),
// when the queue directory is missing (nothing is lost to a typo or an
// unmounted disk) or another user's (the drainer runs as the queue's
// owner and quarantines a file of another user's: root running git
// update-ref in the repository, say; a shell whose test has no -O goes
// this way too), when GIT_DIR is unset, when a variable the file cannot
// carry is set (queueBypassEnv), or when no file can be created. It then
// names the queue in REFCAST_QUEUE, so that push waits for the same
// repository's older queued pushes rather than overtake them.
//
// Each push gets a file of its own, created with noclobber (O_EXCL, so a
// recycled PID picks the next number) by the one redirection that writes
// it (one open and one close: the drainer wakes once, at the close), mode
// 0600 (the token may be in the environment). LC_ALL=C makes ${#v} count
// bytes, as the reader does.
//
// git's lines are read into a variable first and written with one printf,
// so that a write that fails (a full disk) loses nothing: the file is
// emptied (the drainer drops an empty file) and refcast gets the lines
// through a pipe (a here-document may need a temporary file: bash's do). Appending to a shell variable copies it, so a
// push of more than queueScriptLines updates (a mirror push: 10,000 lines
// took 29 s in dash this way, against 2 s a line at a time) goes to
// refcast instead, its input rebuilt with one cat.
func queueScript(binary, mode, queue string) string {
	if queue == "" {
		return ""
	}
	q := shellQuote(binary)
	var b strings.Builder
	b.WriteString(`q=` + shellQuote(queue) + `
export ` + queueEnvVar + `="$q"
if [ ! -x "$prev" ] && [ -d "$q" ] && [ -O "$q" ] && [ -n "${GIT_DIR-}" ] && [ -z "`)
	for _, k := range queueBypassEnv {
		b.WriteString("${" + k + "-}")
	}
	fmt.Fprintf(&b, `" ]; then
	in= n=0 z=
	while IFS= read -r l || [ -n "$l" ]; do
		if [ "$n" -ge %[1]d ]; then
			{ printf '%%s%%s\n' "$in" "$l"; exec cat; } | %[2]s hook %[3]s "$@"
			exit $?
		fi
		in="$in$l
"
		n=$((n + 1))
%[5]s	done
%[6]s	umask 077
	LC_ALL=C
	n=0 w=0
	set -C
	until {
		printf '%%s\n%[7]sdir %%s\n%%s\n' '%[4]s' "${#PWD}" "$PWD" || w=1
`, queueScriptLines, q, mode, queueMagic, txnZeroCheck(mode), txnStates(mode, q), txnHookLine(mode))
	for _, k := range QueueEnv {
		fmt.Fprintf(&b, "\t\t[ -z \"${%[1]s+s}\" ] || printf 'env %[1]s %%s\\n%%s\\n' \"${#%[1]s}\" \"$%[1]s\" || w=1\n", k)
	}
	fmt.Fprintf(&b, `		printf 'updates\n%%s' "$in" || w=1
		printf 'end\n' || w=1
	} 2>/dev/null >"$q/$$.$n"; do
		n=$((n + 1))
		[ "$n" -lt 64 ] || break
	done
	set +C
	if [ "$n" -lt 64 ]; then
		[ "$w" = 1 ] || exit 0
		true >"$q/$$.$n"
		echo "refcast hook: could not write the push to the queue $q (disk full?); publishing it from the hook" >&2
	else
		echo "refcast hook: could not create a file in the queue $q (permissions?); publishing it from the hook" >&2
	fi
	printf '%%s' "$in" | %[1]s hook %[2]s "$@"
	exit $?
fi
`, q, mode)
	return b.String()
}

// In reference-transaction mode the script queues only what needs no
// reading of refs: a committed transaction whose every line has a
// non-zero old and new id (a push's updates; receive-pack verifies every
// old id). A line with a zero id (a creation, a delete, an update git did
// not verify, pack-refs' bookkeeping) needs the prepared state's record of
// the ref's value, read while git holds its lock, and the committed
// state's look at what is left (see txn.go): such a transaction runs
// refcast as a process in every state, as without a queue, and its
// committed state waits for the repository's older queued pushes first.
// The prepared and aborted states of a transaction without one do
// nothing in refcast (no record to keep or drop), and no other state does
// anything at all ("preparing" in newer git, states to come): the script
// exits 0 in them.

// txnZeroCheck is the loop body's part that sets z for a line with a zero
// old or new id (all zeros, or empty: a malformed line goes to refcast,
// which says what is wrong).
func txnZeroCheck(mode string) string {
	if mode != ModeReferenceTransaction {
		return ""
	}
	return `		o=${l%% *}
		x=${l#* }
		x=${x%% *}
		case $o in *[!0]*) ;; *) z=1 ;; esac
		case $x in *[!0]*) ;; *) z=1 ;; esac
`
}

// txnStates runs refcast for a transaction the queue cannot take, and
// ends the prepared and aborted states of one it can.
func txnStates(mode, binary string) string {
	if mode != ModeReferenceTransaction {
		return ""
	}
	return `	case ${1-} in
	committed) ;;
	prepared | aborted) [ -n "$z" ] || exit 0 ;;
	*) exit 0 ;;
	esac
	if [ -n "$z" ]; then
		printf '%s' "$in" | ` + binary + ` hook ` + mode + ` "$@"
		exit $?
	fi
`
}

// txnHookLine is the queue file's hook line (see queue.go): none for
// post-receive, so its files read as they always did.
func txnHookLine(mode string) string {
	if mode != ModeReferenceTransaction {
		return ""
	}
	return `hook ` + mode + `\n`
}

// queueScriptLines is the most updates the script queues itself (see
// queueScript): a push of 64 lines costs dash ~1 ms of copying.
const queueScriptLines = 64

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (r *Repo) hooksDir(ctx context.Context) (string, error) {
	out, err := r.run(ctx, nil, "rev-parse", "--path-format=absolute", "--git-path", "hooks")
	if err != nil {
		return "", fmt.Errorf("find hooks directory: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// localConfig reads refcast.* from the repository's own config file only.
func (r *Repo) localConfig(ctx context.Context) (Config, error) {
	return r.readConfig(ctx, "--local")
}

func (r *Repo) installStatePath() string { return filepath.Join(r.CommonDir, installStateName) }

func (r *Repo) loadInstallState() (*installState, error) {
	data, err := os.ReadFile(r.installStatePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read install state: %w", err)
	}
	var st installState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("read install state %s: %w", r.installStatePath(), err)
	}
	if st.Config == nil {
		st.Config = map[string][]string{}
	}
	return &st, nil
}

func (r *Repo) saveInstallState(st *installState) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(r.CommonDir, installStateName, append(data, '\n'))
}
