package watch

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/wire"
)

func TestFormatEvent(t *testing.T) {
	at := time.Date(2026, 11, 25, 15, 0, 0, 0, time.FixedZone("CET", 3600))
	yes, no, three := true, false, 3
	a, b, z := "1a2b3c4"+strings.Repeat("a", 33), "5d6e7f8"+strings.Repeat("b", 33), strings.Repeat("0", 40)
	tests := []struct {
		name string
		ev   bus.Event
		want string
	}{
		{"forced update", bus.Event{Repo: "acme/app", Ref: "refs/heads/main", Kind: bus.KindUpdate, Old: a, New: b, Time: at, Pusher: "alice", Forced: &yes, Commit: &bus.Commit{Subject: "subject"}},
			`2026-11-25T14:00:00Z acme/app refs/heads/main update 1a2b3c4..5d6e7f8 forced by alice: "subject"`},
		{"fast-forward", bus.Event{Repo: "acme/app", Ref: "refs/heads/main", Kind: bus.KindUpdate, Old: a, New: b, Time: at, Forced: &no, Commits: &three},
			`2026-11-25T14:00:00Z acme/app refs/heads/main update 1a2b3c4..5d6e7f8`},
		{"create", bus.Event{Repo: "acme/app", Ref: "refs/tags/v1", Kind: bus.KindCreate, Old: z, New: b, Time: at},
			`2026-11-25T14:00:00Z acme/app refs/tags/v1 create 5d6e7f8`},
		{"delete", bus.Event{Repo: "acme/app", Ref: "refs/heads/x", Kind: bus.KindDelete, Old: a, New: z, Time: at, Pusher: "bob"},
			`2026-11-25T14:00:00Z acme/app refs/heads/x delete 1a2b3c4 by bob`},
		{"sync", bus.Event{Repo: "acme/app", Kind: bus.KindSync, Refs: 12, Time: at},
			`2026-11-25T14:00:00Z acme/app sync 12 refs`},
		{"hostile", bus.Event{Repo: "acme/app", Ref: "refs/heads/\x1b[2J", Kind: bus.KindUpdate, Old: a, New: b, Time: at, Pusher: "eve\nx", Commit: &bus.Commit{Subject: "a\r\nb"}},
			`2026-11-25T14:00:00Z acme/app "refs/heads/\x1b[2J" update 1a2b3c4..5d6e7f8 by "eve\nx": "a\r\nb"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatEvent(&tt.ev); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// FuzzFormatEvent checks that no field can break the one-line output.
func FuzzFormatEvent(f *testing.F) {
	f.Add("acme/app", "refs/heads/main", "alice", "subject", "update")
	f.Add("a\nb", "refs/\r", "\x1b]0;x\x07", "\u2028", "create")
	f.Fuzz(func(t *testing.T, repo, ref, pusher, subject, kind string) {
		ev := bus.Event{Repo: repo, Ref: ref, Pusher: pusher, Kind: bus.Kind(kind), Old: ref, New: pusher, Commit: &bus.Commit{Subject: subject}}
		s := FormatEvent(&ev)
		if strings.ContainsAny(s, "\r\n\x1b\x00") || strings.ContainsRune(s, '\u2028') {
			t.Fatalf("unsafe line %q", s)
		}
	})
}

func TestState(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/state.json"
	if c, err := LoadState(p); c != "" || err != nil {
		t.Fatalf("missing file: %q, %v", c, err)
	}
	for _, c := range []string{"v1-abc_DEF", "v1-xyz"} {
		if err := SaveState(p, c); err != nil {
			t.Fatal(err)
		}
		if got, err := LoadState(p); got != c || err != nil {
			t.Fatalf("LoadState = %q, %v, want %q", got, err, c)
		}
	}
	// The longest cursor a node can send is stored and read back.
	long := strings.Repeat("A", wire.MaxCursorLen)
	if err := SaveState(p, long); err != nil {
		t.Fatalf("save a %d-character cursor: %v", len(long), err)
	}
	if got, err := LoadState(p); got != long || err != nil {
		t.Fatalf("LoadState of a %d-character cursor = %d characters, %v", len(long), len(got), err)
	}
	if err := SaveState(p, "bad cursor"); err == nil {
		t.Error("saved an invalid cursor")
	}
	// A relay's refs are stored with the cursor and read back with it; a
	// cursor-only file (watch's, or an older relay's) has none.
	refs := map[string]map[string]string{"acme/app": {"refs/heads/main": strings.Repeat("a", 40), "refs/tags/v1": strings.Repeat("b", 64)}}
	if err := WriteState(p, State{Cursor: "v1-r", Refs: refs}); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadState(p); err != nil || st.Cursor != "v1-r" || !maps.EqualFunc(st.Refs, refs, maps.Equal[map[string]string]) {
		t.Fatalf("ReadState = %+v, %v, want the refs written", st, err)
	}
	if c, err := LoadState(p); c != "v1-r" || err != nil {
		t.Fatalf("LoadState of a file with refs = %q, %v", c, err)
	}
	if err := SaveState(p, "v1-old"); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadState(p); err != nil || st.Cursor != "v1-old" || st.Refs != nil {
		t.Fatalf("ReadState of a cursor-only file = %+v, %v", st, err)
	}
	if err := WriteState(p, State{Cursor: "v1-r", Refs: map[string]map[string]string{"acme/app": {"refs/heads/main": bus.ZeroSHA1}}}); err == nil {
		t.Error("saved a zero id")
	}
	for name, content := range map[string]string{
		"garbage":   "not json",
		"version":   `{"v":2,"cursor":"abc"}`,
		"bad":       `{"v":1,"cursor":"a/b"}`,
		"empty":     `{"v":1,"cursor":""}`,
		"too long":  `{"v":1,"cursor":"` + strings.Repeat("a", wire.MaxCursorLen+1) + `"}`,
		"bad repo":  `{"v":1,"cursor":"abc","refs":{"../x":{"refs/heads/main":"` + strings.Repeat("a", 40) + `"}}}`,
		"bad ref":   `{"v":1,"cursor":"abc","refs":{"acme/app":{"main":"` + strings.Repeat("a", 40) + `"}}}`,
		"bad id":    `{"v":1,"cursor":"abc","refs":{"acme/app":{"refs/heads/main":"xyz"}}}`,
		"zero id":   `{"v":1,"cursor":"abc","refs":{"acme/app":{"refs/heads/main":"` + bus.ZeroSHA1 + `"}}}`,
		"refs list": `{"v":1,"cursor":"abc","refs":["acme/app"]}`,
	} {
		t.Run(name, func(t *testing.T) {
			q := dir + "/" + strings.ReplaceAll(name, " ", "_")
			if err := writeFile(q, content); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadState(q); err == nil {
				t.Errorf("LoadState accepted %q", content)
			}
		})
	}
}
