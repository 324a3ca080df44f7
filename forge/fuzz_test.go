package forge

import (
	"strings"
	"testing"

	"github.com/refcast/refcast/bus"
)

// fuzzTranslate feeds arbitrary bodies to one forge's translator, after the
// signature check (which a fuzzer cannot pass): it must never panic, and
// whatever it returns must be a push refcast accepts.
func fuzzTranslate(f *testing.F, forge Forge, event string, seeds ...string) {
	for _, s := range seeds {
		f.Add(load(f, s), "d-1", false)
	}
	f.Add([]byte(`{}`), "", true)
	f.Add([]byte(`{"ref":"refs/heads/a b","before":"`+bus.ZeroSHA1+`","after":"`+bus.ZeroSHA1+`"}`), "x", false)
	f.Fuzz(func(t *testing.T, body []byte, delivery string, lower bool) {
		h := signed(forge, event, delivery, testSecret, body)
		d, err := translate(forge, h, body, Naming{Lowercase: lower, Prefix: "forge.example/"}, testNow)
		if err != nil {
			if d != nil {
				t.Fatalf("error %v with a delivery %+v", err, d)
			}
			return
		}
		if d.Push == nil {
			return
		}
		if err := d.Push.Validate(); err != nil {
			t.Fatalf("invalid push %+v: %v", d.Push, err)
		}
		if err := bus.ValidatePushID(d.Push.ID); err != nil {
			t.Fatal(err)
		}
		for _, u := range d.Push.Updates {
			if bus.ValidateRef(u.Ref) != nil || bus.ValidateObjectID(u.Old) != nil || bus.ValidateObjectID(u.New) != nil {
				t.Fatalf("invalid update %+v", u)
			}
		}
	})
}

func FuzzGitHubPush(f *testing.F) {
	fuzzTranslate(f, GitHub, "push", "github-push.json", "github-tag.json", "github-delete.json", "github-forced.json")
}

func FuzzGitLabPush(f *testing.F) {
	fuzzTranslate(f, GitLab, "Push Hook", "gitlab-push.json", "gitlab-tag.json")
}

func FuzzGiteaPush(f *testing.F) {
	fuzzTranslate(f, Gitea, "push", "gitea-push.json")
}

func FuzzBitbucketCloudPush(f *testing.F) {
	fuzzTranslate(f, Bitbucket, "repo:push", "bitbucket-cloud-push.json")
}

func FuzzBitbucketDCPush(f *testing.F) {
	fuzzTranslate(f, Bitbucket, "repo:refs_changed", "bitbucket-dc-refs-changed.json")
}

// FuzzParseSecrets: never a panic; a file that parses has secrets of an
// accepted length.
func FuzzParseSecrets(f *testing.F) {
	f.Add("acme/* " + testSecret + "\n# c\n" + testSecret)
	f.Add("a b c")
	f.Fuzz(func(t *testing.T, file string) {
		s, err := ParseSecrets(strings.NewReader(file))
		if err != nil {
			return
		}
		for _, e := range s.entries {
			if len(e.secret) < MinSecretLen || len(e.secret) > MaxSecretLen {
				t.Fatalf("secret of %d bytes accepted", len(e.secret))
			}
		}
	})
}
