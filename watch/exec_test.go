package watch

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }

func TestExecRunner(t *testing.T) {
	var out bytes.Buffer
	r := &ExecRunner{
		Command: `env | grep ^REFCAST_ | sort; echo stdin=$(cat)`,
		Environ: []string{"PATH=" + os.Getenv("PATH"), "REFCAST_TOKEN=secret", "REFCAST_REPO=from-parent"},
		Output:  &SyncWriter{W: &out},
	}
	b := &Batch{Repo: "acme/app", Ref: "refs/heads/main", Old: "o", New: "n", Kind: "update", Pusher: "alice",
		Cursor: "c1", Forced: "true", Count: 1, Stdin: []byte(`{"x":1}`)}
	if err := r.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	want := `REFCAST_CURSOR=c1
REFCAST_EVENT_COUNT=1
REFCAST_FORCED=true
REFCAST_KIND=update
REFCAST_NEW=n
REFCAST_OLD=o
REFCAST_PUSHER=alice
REFCAST_REF=refs/heads/main
REFCAST_REPO=acme/app
stdin={"x":1}
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	if err := (&ExecRunner{Command: "exit 3", Output: &out}).Run(context.Background(), b); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("non-zero exit: %v", err)
	}
}
