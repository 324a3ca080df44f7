package hook

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// encodeQueueFile writes a queue file as a queue-mode script does: the
// magic line, dir, env (names sorted), the update lines and, when complete,
// the end line.
func encodeQueueFile(dir string, env map[string]string, input []byte, complete bool) []byte {
	return encodeQueueFileOf(ModePostReceive, dir, env, input, complete)
}

// encodeQueueFileOf is encodeQueueFile for a file of the given hook.
func encodeQueueFileOf(hook, dir string, env map[string]string, input []byte, complete bool) []byte {
	var b bytes.Buffer
	b.WriteString(queueMagic + "\n")
	if hook != ModePostReceive {
		b.WriteString("hook " + hook + "\n")
	}
	fmt.Fprintf(&b, "dir %d\n%s\n", len(dir), dir)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(&b, "env %s %d\n%s\n", k, len(env[k]), env[k])
	}
	b.WriteString("updates\n")
	b.Write(input)
	if complete {
		b.WriteString(queueEnd)
	}
	return b.Bytes()
}

const (
	qUpd1 = "1111111111111111111111111111111111111111 2222222222222222222222222222222222222222 refs/heads/main\n"
	qUpd2 = "0000000000000000000000000000000000000000 3333333333333333333333333333333333333333 refs/heads/zoë\n"
)

func TestParseQueueFile(t *testing.T) {
	t.Parallel()
	const head = "refcast-queue 1\ndir 6\n/srv/a\n"
	tricky := map[string]string{
		"REFCAST_PUSHER":  "Zoë\nline2",
		"GL_USERNAME":     "",
		"GL_PROJECT_PATH": "日本/プロジェクト",
		"REFCAST_REPO":    "with\ntrailing newline\n",
	}
	for _, tc := range []struct {
		name     string
		data     string
		dir      string
		env      map[string]string // nil: not checked beyond being empty
		input    string
		complete bool
		wantErr  bool
		hook     string // "": post-receive
	}{
		{name: "reference-transaction", data: "refcast-queue 1\nhook reference-transaction\ndir 6\n/srv/a\nupdates\n" + qUpd1 + "end\n", dir: "/srv/a", input: qUpd1, complete: true, hook: ModeReferenceTransaction},
		{name: "hook line after dir", data: head + "hook reference-transaction\nupdates\nend\n", complete: true, wantErr: true},
		{name: "hook line twice", data: "refcast-queue 1\nhook reference-transaction\nhook reference-transaction\ndir 6\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "hook post-receive spelled out", data: "refcast-queue 1\nhook post-receive\ndir 6\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "hook unknown", data: "refcast-queue 1\nhook pre-receive\ndir 6\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "cut after the hook line", data: "refcast-queue 1\nhook reference-transaction\ndi"},
		{
			name:     "complete with tricky values",
			data:     string(encodeQueueFile("/srv/a", tricky, []byte(qUpd1+qUpd2), true)),
			dir:      "/srv/a",
			env:      tricky,
			input:    qUpd1 + qUpd2,
			complete: true,
		},
		{
			name: "complete, written by hand",
			data: head + "env REFCAST_PUSHER 10\nZoë\nline2\nenv GL_USERNAME 0\n\nenv GL_PROJECT_PATH 6\n日本\n" +
				"updates\n" + qUpd1 + "end\n",
			dir:      "/srv/a",
			env:      map[string]string{"REFCAST_PUSHER": "Zoë\nline2", "GL_USERNAME": "", "GL_PROJECT_PATH": "日本"},
			input:    qUpd1,
			complete: true,
		},
		{
			name:     "value holding header and end lines",
			data:     head + "env REFCAST_PUSHER 20\nx\nupdates\nend\nend\nyy\nupdates\n" + qUpd1 + "end\n",
			dir:      "/srv/a",
			env:      map[string]string{"REFCAST_PUSHER": "x\nupdates\nend\nend\nyy"},
			input:    qUpd1,
			complete: true,
		},
		{name: "no updates", data: head + "updates\nend\n", dir: "/srv/a", complete: true},
		{name: "empty file", data: ""},
		{name: "cut in the magic line", data: "refcast-qu"},
		{name: "cut after the magic", data: "refcast-queue 1"},
		{name: "cut in the header", data: "refcast-queue 1\ndir 6\n/srv/a\nenv GL_USER"},
		{name: "cut in a length", data: "refcast-queue 1\ndir 6\n/srv/a\nenv GL_USERNAME 1"},
		{name: "cut in the dir value", data: "refcast-queue 1\ndir 6\n/sr"},
		{name: "cut in an env value", data: head + "env REFCAST_PUSHER 10\nZoë\nli"},
		{name: "cut before updates", data: head + "env GL_USERNAME 0\n\n"},
		{name: "cut after updates", data: head + "updates\n", dir: "/srv/a"},
		{name: "cut in an update line", data: head + "updates\n" + qUpd1 + qUpd2[:30], dir: "/srv/a", input: qUpd1},
		{name: "cut after an update line", data: head + "updates\n" + qUpd1 + qUpd2, dir: "/srv/a", input: qUpd1 + qUpd2},
		{name: "cut in the end line", data: head + "updates\n" + qUpd1 + "en", dir: "/srv/a", input: qUpd1},
		{name: "end without its newline", data: head + "updates\n" + qUpd1 + "end", dir: "/srv/a", input: qUpd1},

		// A value "end" (or ending in a line "end") is not the end line:
		// the script writes a line at a time, so this is a file still
		// being written.
		{name: "value end, header cut", data: "refcast-queue 1\ndir 6\n/srv/a\nenv GL_USERNAME 3\nend\n"},
		{name: "bad magic", data: "refcast-queue 2\ndir 6\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "only end", data: "\nend\n", complete: true, wantErr: true},
		{name: "bad magic, unfinished", data: "garbage\nmore", wantErr: true},
		{name: "non-numeric length", data: "refcast-queue 1\ndir six\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "negative length", data: "refcast-queue 1\ndir -1\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "huge length", data: "refcast-queue 1\ndir 99999999999999999999\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "length too short", data: "refcast-queue 1\ndir 5\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "env length too short", data: head + "env GL_USERNAME 2\nabc\nupdates\nend\n", complete: true, wantErr: true},
		// A length past the data is a value still being written.
		{name: "length too long", data: "refcast-queue 1\ndir 60\n/srv/a\nupdates\nend\n"},
		{name: "relative dir", data: "refcast-queue 1\ndir 5\nsrv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "empty dir", data: "refcast-queue 1\ndir 0\n\nupdates\nend\n", complete: true, wantErr: true},
		{name: "no dir", data: "refcast-queue 1\nupdates\nend\n", complete: true, wantErr: true},
		{name: "unknown header line", data: head + "foo 1\nx\nupdates\nend\n", complete: true, wantErr: true},
		{name: "dir with extra field", data: "refcast-queue 1\ndir 6 7\n/srv/a\nupdates\nend\n", complete: true, wantErr: true},
		{name: "env without a length", data: head + "env GL_USERNAME\nupdates\nend\n", complete: true, wantErr: true},
		{name: "env name with a dash", data: head + "env GL-USER 1\nx\nupdates\nend\n", complete: true, wantErr: true},
		{name: "env name with a digit first", data: head + "env 1GL 1\nx\nupdates\nend\n", complete: true, wantErr: true},
		{name: "env name empty", data: head + "env  1\nx\nupdates\nend\n", complete: true, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			qf, err := ParseQueueFile([]byte(tc.data))
			dir, env, input, complete := qf.Dir, qf.Env, qf.Input, qf.Complete
			if tc.wantErr {
				if err == nil {
					t.Errorf("no error; got dir %q env %q input %q", dir, env, input)
				}
				return
			}
			if complete != tc.complete {
				t.Errorf("complete = %v, want %v", complete, tc.complete)
			}
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if dir != tc.dir {
				t.Errorf("dir = %q, want %q", dir, tc.dir)
			}
			if want := cmp.Or(tc.hook, ModePostReceive); dir != "" && qf.Hook != want {
				t.Errorf("hook = %q, want %q", qf.Hook, want)
			}
			if string(input) != tc.input {
				t.Errorf("input = %q, want %q", input, tc.input)
			}
			if tc.env == nil {
				if len(env) != 0 {
					t.Errorf("env = %q, want none", env)
				}
			} else if !maps.Equal(env, tc.env) {
				t.Errorf("env = %q, want %q", env, tc.env)
			}
		})
	}
}

func FuzzParseQueueFile(f *testing.F) {
	env := map[string]string{"REFCAST_PUSHER": "Zoë\nline2", "GL_USERNAME": "", "GIT_DIR": "."}
	full := encodeQueueFile("/srv/a", env, []byte(qUpd1+qUpd2), true)
	f.Add(full)
	f.Add(encodeQueueFile("/srv/a", nil, nil, true))
	f.Add(encodeQueueFile("/srv/a", env, []byte(qUpd1), false))
	for _, n := range []int{1, 10, 20, 40, len(full) - 3, len(full) - 1} {
		f.Add(full[:n])
	}
	f.Add([]byte("refcast-queue 2\ndir 2\n/r\nupdates\nend\n"))
	f.Add([]byte("refcast-queue 1\ndir -1\n/r\nupdates\nend\n"))
	f.Add([]byte("refcast-queue 1\ndir 1\n/r\nupdates\nend\n"))
	f.Add([]byte("refcast-queue 1\ndir 2\n/r\nenv 1X 1\nx\nupdates\nend\n"))
	f.Add([]byte("refcast-queue 1\ndir +2\n/r\nenv A 3\nend\nupdates\nend\n"))
	f.Add([]byte("\nend\n"))
	f.Add(encodeQueueFileOf(ModeReferenceTransaction, "/srv/a", env, []byte(qUpd1), true))
	f.Add([]byte("refcast-queue 1\nhook post-receive\ndir 2\n/r\nupdates\nend\n"))
	f.Add([]byte("refcast-queue 1\ndir 2\n/r\nhook reference-transaction\nupdates\nend\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		qf, err := ParseQueueFile(data)
		dir, env, input, complete := qf.Dir, qf.Env, qf.Input, qf.Complete
		if err != nil {
			return
		}
		if !complete {
			if len(input) > 0 && input[len(input)-1] != '\n' {
				t.Fatalf("unfinished file gave input %q: not whole lines", input)
			}
			if dir == "" && len(input) > 0 {
				t.Fatalf("input %q without a dir", input)
			}
			return
		}
		if !filepath.IsAbs(dir) {
			t.Fatalf("complete file gave dir %q", dir)
		}
		for k := range env {
			if !slices.Contains(QueueEnv, k) {
				t.Fatalf("env name %q", k)
			}
		}
		if qf.Hook != ModePostReceive && qf.Hook != ModeReferenceTransaction {
			t.Fatalf("hook %q", qf.Hook)
		}
		again := encodeQueueFileOf(qf.Hook, dir, env, input, true)
		qf2, err := ParseQueueFile(again)
		dir2, env2, input2, complete2 := qf2.Dir, qf2.Env, qf2.Input, qf2.Complete
		if err != nil || !complete2 {
			t.Fatalf("re-encoded %q: complete %v, error %v", again, complete2, err)
		}
		if qf2.Hook != qf.Hook || dir2 != dir || !maps.Equal(env2, env) || !bytes.Equal(input2, input) {
			t.Fatalf("round trip of %q:\n got dir %q env %q input %q\nwant dir %q env %q input %q",
				data, dir2, env2, input2, dir, env, input)
		}
	})
}

// queueFiles lists the queue files in dir (not the lock, not quarantine).
func queueFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if queueFileName(e) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestQueueScriptReferenceTransaction runs the reference-transaction
// queue script under sh and bash, refcast replaced by a script that
// records how it was run: a committed transaction of verified updates is
// queued with its hook line and runs nothing; one with a zero id on any
// line (SHA-1 or SHA-256) runs refcast in every state, with git's lines;
// the other states of a verified transaction run nothing.
func TestQueueScriptReferenceTransaction(t *testing.T) {
	t.Parallel()
	shells := map[string]string{"sh": "/bin/sh"}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	if bash, err := exec.LookPath("bash"); err == nil {
		shells["bash"] = bash
	}
	const (
		verified = qUpd1
		symref   = "ref:refs/heads/a ref:refs/heads/b HEAD\n"
		zero256  = "0000000000000000000000000000000000000000000000000000000000000000 3333333333333333333333333333333333333333333333333333333333333333 refs/heads/x\n"
		deleted  = "1111111111111111111111111111111111111111 0000000000000000000000000000000000000000 refs/heads/gone"
	)
	for _, sh := range slices.Sorted(maps.Keys(shells)) {
		t.Run(sh, func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name, state, stdin string
				queued, ran        bool
				foreign            bool // the queue is another user's
			}{
				{name: "committed verified, another user's queue", state: "committed", stdin: verified, ran: true, foreign: true},
				{"committed verified", "committed", verified + symref, true, false, false},
				{"prepared verified", "prepared", verified, false, false, false},
				{"aborted verified", "aborted", verified, false, false, false},
				{"unknown state", "preparing", qUpd2, false, false, false},
				{"committed creation", "committed", verified + qUpd2, false, true, false},
				{"prepared creation", "prepared", qUpd2, false, true, false},
				{"aborted creation", "aborted", qUpd2, false, true, false},
				{"committed sha256 creation", "committed", zero256, false, true, false},
				{"committed delete, no final newline", "committed", verified + deleted, false, true, false},
				{"committed symbolic-ref creation", "committed", verified + "0000000000000000000000000000000000000000 ref:refs/heads/main HEAD\n", false, true, false},
				{"committed zero id outside refs/", "committed", verified + "0000000000000000000000000000000000000000 2222222222222222222222222222222222222222 ORIG_HEAD\n", false, true, false},
				{"committed, more than 64 lines", "committed", strings.Repeat(verified, 65), false, true, false},
				{"prepared, more than 64 lines", "prepared", strings.Repeat(verified, 65), false, true, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					dir := t.TempDir()
					queue, d, record := filepath.Join(dir, "q"), filepath.Join(dir, "repo"), filepath.Join(dir, "ran")
					os.Mkdir(queue, 0o700)
					os.Mkdir(d, 0o700)
					if tc.foreign {
						if os.Geteuid() != 0 {
							t.Skip("needs root to give the queue to another user")
						}
						if err := os.Chown(queue, 65534, 65534); err != nil {
							t.Fatal(err)
						}
					}
					fake := filepath.Join(dir, "refcast")
					os.WriteFile(fake, []byte("#!/bin/sh\n{ echo \"$*\"; cat; } >"+shellQuote(record)+"\n"), 0o755)
					script := filepath.Join(dir, ModeReferenceTransaction)
					if err := os.WriteFile(script, []byte(hookScript(ModeReferenceTransaction, fake, queue)), 0o755); err != nil {
						t.Fatal(err)
					}
					cmd := exec.Command(shells[sh], script, tc.state)
					cmd.Dir, cmd.Stdin = d, strings.NewReader(tc.stdin)
					cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GIT_DIR=."}
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("exit: %v\n%s", err, out)
					}
					files := queueFiles(t, queue)
					if tc.queued != (len(files) == 1) || len(files) > 1 {
						t.Fatalf("queue holds %q, want queued=%v", files, tc.queued)
					}
					if tc.queued {
						data, _ := os.ReadFile(filepath.Join(queue, files[0]))
						qf, err := ParseQueueFile(data)
						if err != nil || !qf.Complete || qf.Hook != ModeReferenceTransaction || string(qf.Input) != tc.stdin {
							t.Errorf("queued %q: %+v, %v; want a complete reference-transaction file with the lines", data, qf, err)
						}
					}
					got, err := os.ReadFile(record)
					if ran := err == nil; ran != tc.ran {
						t.Fatalf("refcast ran = %v, want %v", ran, tc.ran)
					}
					if want := "hook reference-transaction " + tc.state + "\n" + strings.TrimSuffix(tc.stdin, "\n") + "\n"; tc.ran && string(got) != want {
						t.Errorf("refcast got\n%q\nwant\n%q", got, want)
					}
				})
			}
		})
	}
}

func TestQueueScriptRoundTrip(t *testing.T) {
	t.Parallel()
	shells := map[string]string{}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	shells["sh"] = "/bin/sh"
	if bash, err := exec.LookPath("bash"); err == nil {
		shells["bash"] = bash
	}
	const bin = "/nonexistent/refcast"
	stdin := qUpd1 + strings.TrimSuffix(qUpd2, "\n") // the last line without its newline
	nameRE := regexp.MustCompile(`^[0-9]+\.[0-9]+$`)

	for _, sh := range slices.Sorted(maps.Keys(shells)) {
		shell := shells[sh]
		t.Run(sh, func(t *testing.T) {
			t.Parallel()
			// run runs a queue-mode script for queue in D with env.
			run := func(t *testing.T, queue, d string, env []string) (int, string) {
				t.Helper()
				script := filepath.Join(t.TempDir(), ModePostReceive)
				if err := os.WriteFile(script, []byte(hookScript(ModePostReceive, bin, queue)), 0o755); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(shell, script)
				cmd.Dir, cmd.Env, cmd.Stdin = d, env, strings.NewReader(stdin)
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				err := cmd.Run()
				var ee *exec.ExitError
				switch {
				case err == nil:
					return 0, out.String()
				case errors.As(err, &ee):
					return ee.ExitCode(), out.String()
				}
				t.Fatalf("run %s: %v", shell, err)
				return 0, ""
			}
			baseEnv := []string{
				"PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8", "LC_ALL=C.UTF-8",
				"HOME=/home/zoë", "REFCAST_PUSHER=Zoë\nline2", "GL_USERNAME=",
				"GL_PROJECT_PATH=gr%soup/pro\\ject -n\n", "NOT_CARRIED=x",
			}
			wantEnv := map[string]string{
				"GIT_DIR": ".", "HOME": "/home/zoë", "REFCAST_PUSHER": "Zoë\nline2", "GL_USERNAME": "",
				"GL_PROJECT_PATH": "gr%soup/pro\\ject -n\n",
			}

			t.Run("queued", func(t *testing.T) {
				queue, d := t.TempDir(), t.TempDir()
				code, out := run(t, queue, d, append([]string{"GIT_DIR=."}, baseEnv...))
				if code != 0 {
					t.Fatalf("exit status %d, output %q", code, out)
				}
				files := queueFiles(t, queue)
				if len(files) != 1 || !nameRE.MatchString(files[0]) {
					t.Fatalf("queue holds %q, want one file named PID.N", files)
				}
				path := filepath.Join(queue, files[0])
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("mode %v, want 0600", fi.Mode().Perm())
				}
				data, _ := os.ReadFile(path)
				qf, err := ParseQueueFile(data)
				dir, env, input, complete := qf.Dir, qf.Env, qf.Input, qf.Complete
				if err != nil || !complete {
					t.Fatalf("parse %q: complete %v, %v", data, complete, err)
				}
				gotDir, err1 := filepath.EvalSymlinks(dir)
				wantDir, err2 := filepath.EvalSymlinks(d)
				if err1 != nil || err2 != nil || gotDir != wantDir {
					t.Errorf("dir = %q, want %q (%v, %v)", dir, d, err1, err2)
				}
				if !maps.Equal(env, wantEnv) {
					t.Errorf("env = %q, want %q", env, wantEnv)
				}
				if _, ok := env["REMOTE_USER"]; ok {
					t.Errorf("REMOTE_USER carried though unset")
				}
				if string(input) != qUpd1+qUpd2 {
					t.Errorf("input = %q, want %q", input, qUpd1+qUpd2)
				}

				// A second run gets a file of its own.
				if code, out := run(t, queue, d, append([]string{"GIT_DIR=."}, baseEnv...)); code != 0 {
					t.Fatalf("second run: exit status %d, output %q", code, out)
				}
				files2 := queueFiles(t, queue)
				if len(files2) != 2 || !slices.Contains(files2, files[0]) {
					t.Fatalf("after two runs the queue holds %q", files2)
				}
				for _, name := range files2 {
					if !nameRE.MatchString(name) {
						t.Errorf("file %q not named PID.N", name)
					}
					data, _ := os.ReadFile(filepath.Join(queue, name))
					if qf, err := ParseQueueFile(data); err != nil || !qf.Complete || string(qf.Input) != qUpd1+qUpd2 {
						t.Errorf("%s: complete %v, input %q, %v", name, qf.Complete, qf.Input, err)
					}
				}
			})

			type bypass struct {
				name    string
				env     []string
				noQueue bool
			}
			cases := []bypass{
				{name: "GIT_DIR unset", env: baseEnv},
				{name: "GIT_DIR empty", env: append([]string{"GIT_DIR="}, baseEnv...)},
				{name: "queue missing", env: append([]string{"GIT_DIR=."}, baseEnv...), noQueue: true},
			}
			for _, k := range queueBypassEnv {
				cases = append(cases, bypass{name: k + " set", env: append([]string{"GIT_DIR=.", k + "='a.b'='c'\n1"}, baseEnv...)})
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					queue, d := t.TempDir(), t.TempDir()
					if tc.noQueue {
						queue = filepath.Join(queue, "missing")
					}
					code, out := run(t, queue, d, tc.env)
					if code != 126 && code != 127 {
						t.Errorf("exit status %d (output %q), want 126 or 127 from exec %s", code, out, bin)
					}
					if tc.noQueue {
						if _, err := os.Stat(queue); err == nil {
							t.Errorf("the script created the missing queue %s", queue)
						}
						return
					}
					if files := queueFiles(t, queue); len(files) != 0 {
						t.Errorf("queue holds %q, want nothing", files)
					}
				})
			}
		})
	}
}

// drainCall is one call of a test's handle.
type drainCall struct {
	Dir, Name, PushID string
	Complete          bool
	Input             string
	Env               map[string]string
	Time              time.Time
	Err               error
}

// drainRec records a drainer's calls; fn, when set, picks each call's
// result.
type drainRec struct {
	mu    sync.Mutex
	calls []drainCall
	fn    func(q *QueuedPush, n int) error // n: earlier calls for q.Name
}

func (r *drainRec) handle(_ context.Context, q *QueuedPush) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	if r.fn != nil {
		n := 0
		for _, c := range r.calls {
			if c.Name == q.Name {
				n++
			}
		}
		err = r.fn(q, n)
	}
	r.calls = append(r.calls, drainCall{Dir: q.Dir, Name: q.Name, PushID: q.PushID, Complete: q.Complete,
		Input: string(q.Input), Env: q.Env, Time: q.Time, Err: err})
	return err
}

func (r *drainRec) got() []drainCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// handled reports whether name was handled successfully.
func (r *drainRec) handled(name string) bool {
	for _, c := range r.got() {
		if c.Name == name && c.Err == nil {
			return true
		}
	}
	return false
}

// startDrain runs DrainQueue on dir until the returned stop is called (or
// the test ends); stop returns DrainQueue's error.
func startDrain(t *testing.T, dir string, handle func(context.Context, *QueuedPush) error, o DrainOptions) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- DrainQueue(ctx, dir, handle, o) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func queueDepthIs(t *testing.T, dir string, n int) func() bool {
	return func() bool {
		d, err := QueueDepth(dir)
		if err != nil {
			t.Errorf("QueueDepth: %v", err)
			return true
		}
		return d == n
	}
}

// writeQueueFile writes a queue file and sets its mtime (unless zero).
func writeQueueFile(t *testing.T, dir, name string, data []byte, mtime time.Time) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

var pushIDRE = regexp.MustCompile(`^p-[0-9]+-[0-9a-f]{16}$`)

func TestDrainQueueOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := time.Unix(1_700_000_000, 0)
	files := []struct {
		name, repo string
		at         int // seconds after base
	}{
		{"1000.0", "/r/a", 5},
		{"1001.0", "/r/b", 1},
		{"1002.0", "/r/a", 3},
		{"1003.0", "/r/b", 4},
		{"1004.0", "/r/a", 0},
		{"1005.0", "/r/b", 2},
		{"1006.0", "/r/a", 3}, // same time as 1002.0: after it by name
		{"999.0", "/r/b", 6},  // first by name, last by time
	}
	want := map[string][]string{
		"/r/a": {"1004.0", "1002.0", "1006.0", "1000.0"},
		"/r/b": {"1001.0", "1005.0", "1003.0", "999.0"},
	}
	contents := map[string][]byte{}
	for _, f := range files {
		data := encodeQueueFile(f.repo, map[string]string{"GIT_DIR": ".", "REFCAST_PUSHER": f.name}, []byte(qUpd1), true)
		contents[f.name] = data
		writeQueueFile(t, dir, f.name, data, base.Add(time.Duration(f.at)*time.Second))
	}
	rec := &drainRec{}
	stop := startDrain(t, dir, rec.handle, DrainOptions{Workers: 2, Rescan: 10 * time.Millisecond})
	waitFor(t, "every file handled and removed", func() bool {
		return len(rec.got()) >= len(files) && queueDepthIs(t, dir, 0)()
	})
	if err := stop(); err != nil {
		t.Errorf("DrainQueue: %v", err)
	}
	calls := rec.got()
	if len(calls) != len(files) {
		t.Fatalf("%d calls for %d files: %+v", len(calls), len(files), calls)
	}
	got := map[string][]string{}
	ids := map[string]bool{}
	for _, c := range calls {
		got[c.Dir] = append(got[c.Dir], c.Name)
		if !c.Complete || c.Input != qUpd1 || c.Env["REFCAST_PUSHER"] != c.Name || c.Env["GIT_DIR"] != "." || len(c.Env) != 2 {
			t.Errorf("%s: complete %v input %q env %q", c.Name, c.Complete, c.Input, c.Env)
		}
		if !pushIDRE.MatchString(c.PushID) || ids[c.PushID] {
			t.Errorf("%s: push id %q malformed or repeated", c.Name, c.PushID)
		}
		ids[c.PushID] = true
		if want := queuedPushID(c.Name, c.Time, contents[c.Name]); c.PushID != want {
			t.Errorf("%s: push id %q, want %q from its name, time and content", c.Name, c.PushID, want)
		}
	}
	for repo, names := range want {
		if !slices.Equal(got[repo], names) {
			t.Errorf("%s handled in order %q, want %q", repo, got[repo], names)
		}
	}
	if len(got) != len(want) {
		t.Errorf("repositories handled: %q", slices.Collect(maps.Keys(got)))
	}
}

func TestDrainQueueSkipsUnfinished(t *testing.T) {
	t.Parallel()
	t.Run("waits for the end line", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		unfinished := encodeQueueFile("/r/a", map[string]string{"GIT_DIR": "."}, []byte(qUpd1), false)
		writeQueueFile(t, dir, "2000.0", unfinished, time.Time{})
		// Cut after a value "end": it looks finished from its last bytes.
		writeQueueFile(t, dir, "1999.0", []byte("refcast-queue 1\ndir 4\n/r/c\nenv GL_USERNAME 3\nend\n"), time.Time{})
		writeQueueFile(t, dir, "2001.0", encodeQueueFile("/r/b", nil, []byte(qUpd1), true), time.Time{})
		rec := &drainRec{}
		startDrain(t, dir, rec.handle, DrainOptions{Rescan: 5 * time.Millisecond})
		waitFor(t, "the first barrier handled", func() bool { return rec.handled("2001.0") && queueDepthIs(t, dir, 2)() })
		// A second barrier, written while the drainer runs: one more scan
		// passes the unfinished file.
		writeQueueFile(t, dir, "2002.0", encodeQueueFile("/r/a", nil, []byte(qUpd2), true), time.Time{})
		waitFor(t, "the second barrier handled", func() bool { return rec.handled("2002.0") && queueDepthIs(t, dir, 2)() })
		if rec.handled("2000.0") || rec.handled("1999.0") || len(rec.got()) != 2 {
			t.Fatalf("an unfinished file was handled: %+v", rec.got())
		}
		for _, name := range []string{"2000.0", "1999.0"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Fatalf("the unfinished file %s is gone (quarantined?): %v", name, err)
			}
		}
		f1999, err := os.OpenFile(filepath.Join(dir, "1999.0"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f1999.WriteString("updates\n" + qUpd2 + queueEnd); err != nil {
			t.Fatal(err)
		}
		f1999.Close()
		waitFor(t, "the file with a value end handled", func() bool { return rec.handled("1999.0") })
		f, err := os.OpenFile(filepath.Join(dir, "2000.0"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(queueEnd); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the finished file handled", func() bool { return rec.handled("2000.0") && queueDepthIs(t, dir, 0)() })
		calls := rec.got()
		if len(calls) != 4 {
			t.Fatalf("calls %+v", calls)
		}
		if c := calls[2]; c.Name != "1999.0" || !c.Complete || c.Input != qUpd2 || c.Env["GL_USERNAME"] != "end" {
			t.Errorf("file with a value end handled as %+v", c)
		}
		if c := calls[3]; c.Name != "2000.0" || !c.Complete || c.Input != qUpd1 || c.Dir != "/r/a" || c.Env["GIT_DIR"] != "." {
			t.Errorf("finished file handled as %+v", c)
		}
	})
	t.Run("abandoned", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		old := time.Now().Add(-time.Hour)
		cut := encodeQueueFile("/r/a", map[string]string{"REFCAST_PUSHER": "zoë"}, []byte(qUpd1+qUpd2[:25]), false)
		writeQueueFile(t, dir, "3000.0", cut, old)
		writeQueueFile(t, dir, "3001.0", []byte("refcast-queue 1\ndir 6\n/r/"), old)
		writeQueueFile(t, dir, "3002.0", []byte("refcast-qu"), old)
		rec := &drainRec{}
		startDrain(t, dir, rec.handle, DrainOptions{AbandonAfter: 50 * time.Millisecond, Rescan: 5 * time.Millisecond})
		waitFor(t, "the queue emptied", func() bool { return rec.handled("3000.0") && queueDepthIs(t, dir, 0)() })
		calls := rec.got()
		if len(calls) != 1 {
			t.Fatalf("calls %+v, want one for 3000.0", calls)
		}
		if c := calls[0]; c.Name != "3000.0" || c.Complete || c.Input != qUpd1 || c.Dir != "/r/a" || c.Env["REFCAST_PUSHER"] != "zoë" {
			t.Errorf("abandoned file handled as %+v", c)
		}
		if _, err := os.Stat(filepath.Join(dir, QuarantineDir)); err == nil {
			t.Errorf("something was quarantined")
		}
	})
}

func TestDrainQueueQuarantine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeQueueFile(t, dir, "4000.0", []byte("refcast-queue 9\ndir 2\n/r\nupdates\nend\n"), time.Time{})
	writeQueueFile(t, dir, "4001.0", encodeQueueFile("/r/q", nil, []byte(qUpd1), true), time.Time{})
	rec := &drainRec{fn: func(q *QueuedPush, _ int) error {
		if q.Dir == "/r/q" {
			return fmt.Errorf("%w: x", errQuarantine)
		}
		return nil
	}}
	startDrain(t, dir, rec.handle, DrainOptions{Rescan: 5 * time.Millisecond})
	qdir := filepath.Join(dir, QuarantineDir)
	// quarantined is where a file went: its name and a time (pids recur).
	quarantined := func(name string) string {
		m, _ := filepath.Glob(filepath.Join(qdir, name+".[0-9]*[0-9]"))
		if len(m) != 1 {
			return ""
		}
		return m[0]
	}
	exists := func(path string) bool { _, err := os.Stat(path); return path != ".reason" && err == nil }
	waitFor(t, "both files quarantined", func() bool {
		return exists(quarantined("4000.0")) && exists(quarantined("4000.0")+".reason") &&
			exists(quarantined("4001.0")) && exists(quarantined("4001.0")+".reason") && queueDepthIs(t, dir, 0)()
	})
	writeQueueFile(t, dir, "4002.0", encodeQueueFile("/r/a", nil, []byte(qUpd2), true), time.Time{})
	waitFor(t, "the good file handled", func() bool { return rec.handled("4002.0") && queueDepthIs(t, dir, 0)() })
	for name, want := range map[string]string{"4000.0": "refcast-queue 9", "4001.0": "x"} {
		reason, _ := os.ReadFile(quarantined(name) + ".reason")
		if !strings.Contains(string(reason), errQuarantine.Error()) || !strings.Contains(string(reason), want) {
			t.Errorf("%s: reason %q", name, reason)
		}
	}
	if data, _ := os.ReadFile(quarantined("4001.0")); !bytes.Equal(data, encodeQueueFile("/r/q", nil, []byte(qUpd1), true)) {
		t.Errorf("quarantined file holds %q", data)
	}
	var names []string
	for _, c := range rec.got() {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"4001.0", "4002.0"}) {
		t.Errorf("handled %q, want 4001.0 (once) then 4002.0", names)
	}
}

func TestDrainQueueRetriesInOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := time.Now().Add(-time.Minute)
	writeQueueFile(t, dir, "5001.0", encodeQueueFile("/r/a", nil, []byte(qUpd1), true), base)
	writeQueueFile(t, dir, "5000.0", encodeQueueFile("/r/a", nil, []byte(qUpd2), true), base.Add(time.Second))
	rec := &drainRec{fn: func(q *QueuedPush, n int) error {
		if q.Name == "5001.0" && n < 2 {
			return errors.New("spool not writable")
		}
		return nil
	}}
	startDrain(t, dir, rec.handle, DrainOptions{Workers: 2, Rescan: 5 * time.Millisecond, RetryFirst: time.Millisecond, RetryMax: 2 * time.Millisecond})
	waitFor(t, "both handled", func() bool { return rec.handled("5000.0") && rec.handled("5001.0") && queueDepthIs(t, dir, 0)() })
	var got []string
	for _, c := range rec.got() {
		got = append(got, fmt.Sprintf("%s %v", c.Name, c.Err == nil))
	}
	want := []string{"5001.0 false", "5001.0 false", "5001.0 true", "5000.0 true"}
	if !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

func TestDrainQueueOneDrainer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if QueueDrained(dir) {
		t.Fatal("QueueDrained before any drainer")
	}
	rec := &drainRec{}
	stop := startDrain(t, dir, rec.handle, DrainOptions{})
	waitFor(t, "the drainer holding the lock", func() bool { return QueueDrained(dir) })
	// A canceled context: the lock is tried before anything else, and a
	// second drainer that got it would return nil at once.
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := DrainQueue(canceled, dir, rec.handle, DrainOptions{}); !errors.Is(err, ErrDrainerRunning) {
		t.Errorf("second drainer: %v, want ErrDrainerRunning", err)
	}
	if !QueueDrained(dir) {
		t.Error("QueueDrained false while the first drainer runs")
	}
	if err := stop(); err != nil {
		t.Errorf("first drainer: %v", err)
	}
	// Polled, not checked once: DrainQueue closes its lock without
	// unlocking, and a process other tests fork meanwhile holds a copy of
	// the descriptor (and so the lock) until it execs.
	waitFor(t, "QueueDrained false after the drainer stopped", func() bool { return !QueueDrained(dir) })
	if err := DrainQueue(canceled, dir, rec.handle, DrainOptions{}); err != nil {
		t.Errorf("drainer after the first stopped: %v", err)
	}
	missing := filepath.Join(dir, "missing")
	if err := DrainQueue(canceled, missing, rec.handle, DrainOptions{}); err == nil {
		t.Error("DrainQueue on a missing directory: no error")
	}
	if QueueDrained(missing) {
		t.Error("QueueDrained on a missing directory")
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if err := DrainQueue(canceled, file, rec.handle, DrainOptions{}); err == nil {
		t.Error("DrainQueue on a file: no error")
	}
	if len(rec.got()) != 0 {
		t.Errorf("calls %+v", rec.got())
	}
}

func TestQueuedPushIDStable(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_700_000_000, 123456789)
	data := []byte("refcast-queue 1\n")
	id := queuedPushID("1.0", at, data)
	if !pushIDRE.MatchString(id) || !strings.HasPrefix(id, "p-"+strconv.FormatInt(at.UnixNano(), 10)+"-") {
		t.Fatalf("id %q", id)
	}
	if again := queuedPushID("1.0", at, bytes.Clone(data)); again != id {
		t.Errorf("same input: %q, then %q", id, again)
	}
	for what, other := range map[string]string{
		"name": queuedPushID("1.1", at, data),
		"time": queuedPushID("1.0", at.Add(time.Nanosecond), data),
		"data": queuedPushID("1.0", at, []byte("refcast-queue 2\n")),
		"more": queuedPushID("1.0", at, append(bytes.Clone(data), '\n')),
	} {
		if other == id || !pushIDRE.MatchString(other) {
			t.Errorf("%s changed: id %q, was %q", what, other, id)
		}
	}
}

// TestQueueScriptKeepsItsInput: where the script cannot queue a push after
// reading git's lines (a write fails: here a file size limit of 0, as on
// a full disk; more lines than it queues itself), refcast gets every line,
// and a file it began is left empty for the drainer to drop.
func TestQueueScriptKeepsItsInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fake := filepath.Join(dir, "refcast")
	// The fake refcast prints its arguments and its input: to a pipe, which
	// the file size limit does not cover.
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"args: $*\"\nexec cat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, ModePostReceive)
	queue := filepath.Join(dir, "queue")
	os.Mkdir(queue, 0o700)
	if err := os.WriteFile(script, []byte(hookScript(ModePostReceive, fake, queue)), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, prefix, stdin string) (string, string) {
		t.Helper()
		// A disposition of "ignore" survives exec: the write fails with
		// EFBIG instead of the signal killing the shell.
		var stdout, stderr bytes.Buffer
		// The fake was just written: a process another parallel test
		// forked meanwhile can hold its write descriptor until it execs,
		// and exec then fails with ETXTBSY (golang/go#22315): try again.
		for range 50 {
			cmd := exec.Command("/bin/sh", "-c", prefix+"exec /bin/sh "+script)
			cmd.Dir, cmd.Env, cmd.Stdin = dir, []string{"GIT_DIR=.", "PATH=/usr/bin:/bin"}, strings.NewReader(stdin)
			stdout.Reset()
			stderr.Reset()
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if strings.Contains(stderr.String(), "Text file busy") {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err != nil {
				t.Fatalf("script: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			break
		}
		return stdout.String(), stderr.String()
	}
	t.Run("write fails", func(t *testing.T) {
		out, errOut := run(t, `trap "" XFSZ; ulimit -f 0; `, qUpd1+qUpd2)
		if want := "args: hook post-receive\n" + qUpd1 + qUpd2; out != want {
			t.Errorf("refcast got\n%q\nwant\n%q", out, want)
		}
		if !strings.Contains(errOut, "could not write the push to the queue") {
			t.Errorf("stderr %q: no word of the failed write", errOut)
		}
		for _, name := range queueFiles(t, queue) {
			if fi, err := os.Stat(filepath.Join(queue, name)); err != nil || fi.Size() != 0 {
				t.Errorf("queue file %s left with %d bytes, want empty", name, fi.Size())
			}
			os.Remove(filepath.Join(queue, name))
		}
	})
	t.Run("more lines than it queues", func(t *testing.T) {
		var in strings.Builder
		for i := range queueScriptLines + 3 {
			fmt.Fprintf(&in, "%040d %040d refs/heads/b%d\n", i, i+1, i)
		}
		out, _ := run(t, "", in.String())
		if want := "args: hook post-receive\n" + in.String(); out != want {
			t.Errorf("refcast got %d bytes, want all %d lines", len(out), queueScriptLines+3)
		}
		if names := queueFiles(t, queue); len(names) != 0 {
			t.Errorf("queue files %v, want none", names)
		}
	})
}

// TestOpenQueueRefuses: a queue others may write is refused (a queue file
// publishes with a repository's credentials); so is a second drainer.
func TestOpenQueueRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenQueue(dir); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("OpenQueue of a 0777 directory: %v", err)
	}
	os.Chmod(dir, 0o700)
	q, err := OpenQueue(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenQueue(dir); !errors.Is(err, ErrDrainerRunning) {
		t.Fatalf("second OpenQueue: %v, want ErrDrainerRunning", err)
	}
	q.Close()
	if QueueDrained(dir) {
		t.Fatal("QueueDrained after Close")
	}
}

// TestDrainQueueForeignFile: a file owned by a user who is neither the
// queue's owner nor the drainer is quarantined, never handled.
func TestDrainQueueForeignFile(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	dir := t.TempDir()
	writeQueueFile(t, dir, "6000.0", encodeQueueFile("/r/a", nil, []byte(qUpd1), true), time.Time{})
	if err := os.Chown(filepath.Join(dir, "6000.0"), 4242, 4242); err != nil {
		t.Fatal(err)
	}
	// The drainer (root) is not the queue's owner either.
	if err := os.Chown(dir, 4343, 4343); err != nil {
		t.Fatal(err)
	}
	writeQueueFile(t, dir, "6001.0", encodeQueueFile("/r/b", nil, []byte(qUpd1), true), time.Time{})
	rec := &drainRec{}
	startDrain(t, dir, rec.handle, DrainOptions{Rescan: 5 * time.Millisecond})
	waitFor(t, "the drainer's own file handled", func() bool { return rec.handled("6001.0") && queueDepthIs(t, dir, 0)() })
	if rec.handled("6000.0") {
		t.Fatal("a file of uid 4242 was handled")
	}
	m, _ := filepath.Glob(filepath.Join(dir, QuarantineDir, "6000.0.*.reason"))
	if len(m) != 1 {
		t.Fatal("the foreign file is not in quarantine")
	}
	if reason, _ := os.ReadFile(m[0]); !strings.Contains(string(reason), "uid 4242") {
		t.Errorf("reason %q", reason)
	}
}

// TestDrainQueueStopLeavesTheRest: when the drainer stops, the push being
// handled finishes (its context is not cancelled) and the others stay in
// the queue, unhandled.
func TestDrainQueueStopLeavesTheRest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := time.Now().Add(-time.Minute)
	for i := range 5 {
		writeQueueFile(t, dir, fmt.Sprintf("700%d.0", i), encodeQueueFile("/r/a", nil, []byte(qUpd1), true), base.Add(time.Duration(i)*time.Second))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls, cancelled := 0, false
	handle := func(hctx context.Context, q *QueuedPush) error {
		calls++  // one worker: no other goroutine calls handle
		cancel() // the drainer stops while this push is in hand
		cancelled = cancelled || hctx.Err() != nil
		return nil
	}
	if err := DrainQueue(ctx, dir, handle, DrainOptions{Workers: 1, Rescan: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if cancelled {
		t.Error("the push in hand saw a cancelled context")
	}
	if calls != 1 {
		t.Errorf("%d pushes handled, want only the one in hand", calls)
	}
	if d, _ := QueueDepth(dir); d != 4 {
		t.Errorf("%d files left in the queue, want 4", d)
	}
}

// TestDrainQueueStuckRepoHoldsNoOther: a repository whose push cannot be
// published (its handler does not return) and that has more files than
// its worker takes does not keep another worker's repository waiting.
func TestDrainQueueStuckRepoHoldsNoOther(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Two repositories on different workers of two.
	stuck, free := "/r/stuck", ""
	for i := 0; free == ""; i++ {
		if c := fmt.Sprintf("/r/free%d", i); workerOf(c, 2) != workerOf(stuck, 2) {
			free = c
		}
	}
	base := time.Now().Add(-time.Hour)
	for i := range 40 {
		writeQueueFile(t, dir, fmt.Sprintf("%d.0", 1000+i), encodeQueueFile(stuck, nil, []byte(qUpd1), true), base.Add(time.Duration(i)*time.Second))
	}
	writeQueueFile(t, dir, "9999.0", encodeQueueFile(free, nil, []byte(qUpd1), true), base.Add(time.Minute))
	release := make(chan struct{})
	defer close(release) // before startDrain's cleanup stops the drainer
	var freeDone atomic.Bool
	handle := func(_ context.Context, q *QueuedPush) error {
		if q.Dir == stuck {
			<-release
		}
		if q.Name == "9999.0" {
			freeDone.Store(true)
		}
		return nil
	}
	startDrain(t, dir, handle, DrainOptions{Workers: 2, Rescan: 5 * time.Millisecond})
	waitFor(t, "the other repository's push handled", freeDone.Load)
}

// TestDrainQueueLongHeader: a file whose header is longer than the head
// read to pick its worker is read whole first and handled like any other.
func TestDrainQueueLongHeader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	long := strings.Repeat("x", queueHeadMax+10)
	writeQueueFile(t, dir, "8000.0", encodeQueueFile("/r/a", map[string]string{"REFCAST_REPO_MAP": long}, []byte(qUpd1), true), time.Time{})
	rec := &drainRec{}
	startDrain(t, dir, rec.handle, DrainOptions{Workers: 2, Rescan: 5 * time.Millisecond})
	waitFor(t, "the file handled", func() bool { return rec.handled("8000.0") && queueDepthIs(t, dir, 0)() })
	if c := rec.got()[0]; c.Dir != "/r/a" || c.Env["REFCAST_REPO_MAP"] != long || c.Input != qUpd1 {
		t.Errorf("handled as dir %q, input %q, %d bytes of REFCAST_REPO_MAP", c.Dir, c.Input, len(c.Env["REFCAST_REPO_MAP"]))
	}
}
