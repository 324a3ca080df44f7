package bus

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestJSONBufferMatchesMarshal: JSONBuffer.Encode gives json.Marshal's
// bytes (HTML characters escaped alike, no trailing newline), also when a
// buffer is reused for a shorter event after a longer one.
func TestJSONBufferMatchesMarshal(t *testing.T) {
	forced := true
	evs := []*Event{
		{V: SchemaVersion, Repo: "acme/app", Ref: "refs/heads/main", New: "1111111111111111111111111111111111111111", Kind: KindCreate,
			Time: time.Date(2026, 12, 5, 1, 2, 3, 4, time.UTC), Forced: &forced,
			Commit: &Commit{Subject: "<script>&\"x\"\u2028</script>\n", Author: "A <a@example.com>"}},
		{V: SchemaVersion, Repo: "r", Ref: "refs/tags/t", Kind: KindSync},
	}
	jb := GetJSONBuffer()
	defer jb.Release()
	for _, ev := range evs {
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := jb.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("Encode:\n%s\nMarshal:\n%s", got, want)
		}
	}
}
