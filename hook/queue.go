package hook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The queue takes the refcast process out of a push. A queue-mode hook
// script (install-hook --queue DIR) does with shell builtins alone what git
// needs of it: it writes git's update lines, the directory the hook ran in
// and the environment variables the hook reads into a file of its own in
// DIR, and exits. A long-running `refcast hook drain --queue DIR` sees the
// file close (inotify on Linux), runs the hook's pipeline on it exactly as
// the hook would have (Runner.PostReceive, or ReferenceTransaction's
// committed state, with that directory and environment: enrichment,
// publish or spool) and removes the file.
//
// Why: a push with the hook used to wait for a whole refcast process:
// exec, the Go runtime and ~160 package inits, 20-30 ms on a 2-core
// machine, where a plain local push takes 70-90 ms. The script costs a
// dash start and a few writes (docs/performance.md, "The queue").
//
// A queue file, version 1:
//
//	refcast-queue 1
//	hook reference-transaction  (only from a reference-transaction script)
//	dir <n>
//	<n bytes: the absolute working directory of the hook>
//	env <NAME> <n>            (zero or more, each variable the hook had set)
//	<n bytes: its value>
//	updates
//	<git's "<old> <new> <ref>" lines, as git gave them>
//	end
//
// A file without a hook line is a post-receive push, as every file was
// before reference-transaction scripts could queue; the drainer runs a
// reference-transaction file through that hook's "committed" state.
//
// Lengths are in bytes (the script sets LC_ALL=C before ${#v}), so values
// may hold newlines. A file without the final "end" line is still being
// written, or its hook was killed: it is left alone until AbandonAfter has
// passed since its last write, then the complete update lines it holds are
// published (they are ref updates git made; losing them would be worse).

const (
	queueMagic = "refcast-queue 1"
	queueEnd   = "end\n"
	// queueLockName is held by the one drainer of a queue, for its life.
	queueLockName = ".drain.lock"
	// MaxQueueFile bounds a queue file: git's input (MaxInput) and an
	// environment of a few KB.
	MaxQueueFile = MaxInput + 1<<20
)

// QueueEnv lists the environment variables a queue-mode script carries to
// the drainer: everything the post-receive pipeline reads (settings,
// pusher, repository and git config location). The drainer runs each push
// with these and nothing else from the hook's environment.
var QueueEnv = []string{
	"GIT_DIR", "GIT_COMMON_DIR", "GIT_EXEC_PATH",
	"HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM",
	"REFCAST_URL", "REFCAST_TOKEN", "REFCAST_REDIS", "REFCAST_PARTITIONS",
	"REFCAST_REPO", "REFCAST_REPO_MAP", "REFCAST_REPO_ROOT", "REFCAST_PUSHER",
	"REFCAST_TIMEOUT", "REFCAST_SPOOL", "REFCAST_ENRICH_BUDGET", "REFCAST_FLUSH_BACKGROUND",
	"REFCAST_HOOK_DIRECT",
	"GL_USERNAME", "GL_PROJECT_PATH", "GITEA_PUSHER_NAME", "REMOTE_USER",
}

// queueEnvVar names the queue to a hook the script runs as a process
// when it cannot queue a push, so that push waits for the older ones
// queued (Runner.waitQueued). Not carried in queue files.
const queueEnvVar = "REFCAST_QUEUE"

// queueBypassEnv are variables whose effect a queue file cannot carry
// (git -c settings, a config file named for this command, objects outside
// the repository): with any of them set the script runs the hook as a
// process, as without a queue.
var queueBypassEnv = []string{"GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_CONFIG", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES"}

// QueuedPush is one queue file, read.
type QueuedPush struct {
	Name     string            // the file's name in the queue
	Hook     string            // ModePostReceive or ModeReferenceTransaction: the pipeline it runs through
	Dir      string            // where the hook ran (receive-pack: the repository)
	Env      map[string]string // the variables of QueueEnv the hook had set
	Input    []byte            // git's update lines
	Time     time.Time         // the file's last write: when the hook ran
	Complete bool              // false: the hook did not finish writing (killed)
	// PushID is the id it is published under: derived from the file
	// (name, time, content), so a drainer killed between publishing and
	// removing the file publishes it again under the same id, which the
	// bus deduplicates.
	PushID string
	// repo is the repository's common directory (a linked worktree's
	// pushes share the main one's), the key that keeps a repository's
	// pushes in order; Dir when it cannot be read.
	repo string
	size int // bytes of the file, held in memory while it is handled
}

// queuedPushID is a queue file's push id (see QueuedPush.PushID), in the
// form NewPushID gives.
func queuedPushID(name string, at time.Time, data []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00", name, at.UnixNano())
	h.Write(data)
	return "p-" + strconv.FormatInt(at.UnixNano(), 10) + "-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// QueueFile is a queue file's content.
type QueueFile struct {
	Hook  string            // ModePostReceive (no hook line) or ModeReferenceTransaction
	Dir   string            // where the hook ran; "" when the header is cut short
	Env   map[string]string // the variables of QueueEnv the hook had set
	Input []byte            // git's update lines: whole lines only
	// Complete says whether the "end" line follows the "updates" line.
	Complete bool
}

// ParseQueueFile reads a queue file's content. Complete says whether the
// "end" line follows the "updates" line (a value may be "end" too, and the
// script writes a line at a time); an incomplete file's input holds its
// complete update lines only. No prefix of a well-formed file is an error:
// one cut in the header is incomplete with nothing to publish (Dir empty).
func ParseQueueFile(data []byte) (QueueFile, error) {
	qf := QueueFile{Hook: ModePostReceive}
	rest := data
	line := func() (string, bool) {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		l := string(rest[:i])
		rest = rest[i+1:]
		return l, true
	}
	value := func(n int) (string, bool) {
		if n < 0 || len(rest) < n+1 || rest[n] != '\n' {
			return "", false
		}
		v := string(rest[:n])
		rest = rest[n+1:]
		return v, true
	}
	l, ok := line()
	if !ok {
		return QueueFile{}, nil // cut short: still being written, or its hook was killed
	}
	if l != queueMagic {
		return QueueFile{}, fmt.Errorf("queue file: first line %.40q, want %q", l, queueMagic)
	}
	qf.Env = map[string]string{}
	for first := true; ; first = false {
		l, ok = line()
		if !ok {
			return QueueFile{}, nil // cut short: still being written, or its hook was killed
		}
		if l == "updates" {
			break
		}
		f := strings.Split(l, " ")
		var name, n string
		switch {
		case len(f) == 2 && f[0] == "hook" && first && f[1] == ModeReferenceTransaction:
			// Right after the magic line, and only the hook that needs it.
			qf.Hook = f[1]
			continue
		case len(f) == 2 && f[0] == "dir":
			n = f[1]
		case len(f) == 3 && f[0] == "env" && slices.Contains(QueueEnv, f[1]):
			name, n = f[1], f[2]
		default:
			return QueueFile{}, fmt.Errorf("queue file: header line %.60q is not dir N, env NAME N with NAME one the hook carries, or hook reference-transaction first", l)
		}
		size, err := strconv.Atoi(n)
		if err != nil || size < 0 || size > MaxQueueFile {
			return QueueFile{}, fmt.Errorf("queue file: bad length in %.60q", l)
		}
		v, ok := value(size)
		if !ok {
			if len(rest) < size+1 {
				return QueueFile{}, nil // cut short: still being written, or its hook was killed
			}
			return QueueFile{}, fmt.Errorf("queue file: value of %.60q is not %d bytes and a newline", l, size)
		}
		if name == "" {
			qf.Dir = v
		} else {
			qf.Env[name] = v
		}
	}
	if qf.Dir == "" || !filepath.IsAbs(qf.Dir) {
		return QueueFile{}, fmt.Errorf("queue file: the hook's directory %q is not an absolute path", qf.Dir)
	}
	qf.Complete = string(rest) == queueEnd || bytes.HasSuffix(rest, []byte("\n"+queueEnd))
	if qf.Complete {
		qf.Input = rest[:len(rest)-len(queueEnd)]
	} else if i := bytes.LastIndexByte(rest, '\n'); i >= 0 {
		qf.Input = rest[:i+1]
	}
	return qf, nil
}
