package bus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateRef(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, ref string
		ok        bool
	}{
		{"branch", "refs/heads/main", true},
		{"nested branch", "refs/heads/feature/x-1", true},
		{"tag", "refs/tags/v1.2.3", true},
		{"unicode", "refs/heads/café", true},
		{"pull", "refs/pull/12/head", true},
		{"not under refs", "heads/main", false},
		{"HEAD", "HEAD", false},
		{"refs only", "refs/", false},
		{"double dot", "refs/heads/a..b", false},
		{"trailing slash", "refs/heads/", false},
		{"double slash", "refs/heads//x", false},
		{"trailing dot", "refs/heads/x.", false},
		{"component dot", "refs/heads/.hidden", false},
		{"lock", "refs/heads/x.lock", false},
		{"lock component", "refs/heads/x.lock/y", false},
		{"at brace", "refs/heads/a@{1}", false},
		{"space", "refs/heads/a b", false},
		{"tilde", "refs/heads/a~1", false},
		{"caret", "refs/heads/a^", false},
		{"colon", "refs/heads/a:b", false},
		{"question", "refs/heads/a?", false},
		{"star", "refs/heads/*", false},
		{"bracket", "refs/heads/[a]", false},
		{"backslash", `refs/heads/a\b`, false},
		{"newline", "refs/heads/a\nb", false},
		{"cr", "refs/heads/a\rdata: x", false},
		{"del", "refs/heads/a\x7f", false},
		{"invalid utf8", "refs/heads/\xff", false},
		{"too long", "refs/heads/" + strings.Repeat("a", MaxRefLen), false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateRef(tc.ref)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateRef(%q) = %v, want ok=%v", tc.ref, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestValidateRepo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, repo string
		ok         bool
	}{
		{"plain", "app", true},
		{"org", "acme/app", true},
		{"deep", "acme/group/sub/app", true},
		{"dots dashes", "acme/my-app.v2", true},
		{"underscore first", "_archive/x", true},
		{"empty", "", false},
		{"leading slash", "/acme/app", false},
		{"trailing slash", "acme/app/", false},
		{"double slash", "acme//app", false},
		{"dot segment", "acme/../app", false},
		{"hidden", "acme/.git", false},
		{"dot git suffix", "acme/app.git", false},
		{"lock suffix", "acme/app.lock", false},
		{"dash first", "-rf/x", false},
		{"space", "acme/my app", false},
		{"colon", "acme:app", false},
		{"star", "acme/*", false},
		{"brace", "acme/{p1}", false},
		{"newline", "acme/app\n", false},
		{"too long", strings.Repeat("a/", 128) + "a", false},
		{"segment too long", strings.Repeat("a", MaxRepoSegmentLen+1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateRepo(tc.repo); (err == nil) != tc.ok {
				t.Fatalf("ValidateRepo(%q) = %v, want ok=%v", tc.repo, err, tc.ok)
			}
		})
	}
}

func TestObjectIDs(t *testing.T) {
	t.Parallel()
	sha1 := strings.Repeat("ab", 20)
	sha256 := strings.Repeat("cd", 32)
	for _, tc := range []struct {
		id string
		ok bool
	}{{sha1, true}, {sha256, true}, {ZeroSHA1, true}, {ZeroSHA256, true},
		{strings.ToUpper(sha1), false}, {sha1[:39], false}, {sha1 + "0", false}, {"", false}, {strings.Repeat("g", 40), false}} {
		if err := ValidateObjectID(tc.id); (err == nil) != tc.ok {
			t.Errorf("ValidateObjectID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
	if !IsZeroID(ZeroSHA1) || !IsZeroID(ZeroSHA256) || IsZeroID(sha1) {
		t.Fatal("IsZeroID wrong")
	}
}

func TestPushValidateAndKinds(t *testing.T) {
	t.Parallel()
	a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	good := func() Push {
		return Push{ID: "p-1", Repo: "acme/app", Time: time.Unix(1, 0), Updates: []RefUpdate{
			{Ref: "refs/heads/main", Old: a, New: b},
			{Ref: "refs/heads/new", Old: ZeroSHA1, New: b},
			{Ref: "refs/heads/gone", Old: a, New: ZeroSHA1},
		}}
	}
	p := good()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	evs := p.Events()
	want := []Kind{KindUpdate, KindCreate, KindDelete}
	for i, e := range evs {
		if e.Kind != want[i] || e.V != SchemaVersion || e.PushID != "p-1" || e.Repo != "acme/app" {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Push)
		want   string
	}{
		{"bad id", func(p *Push) { p.ID = "a b" }, "push id"},
		{"bad repo", func(p *Push) { p.Repo = "../x" }, "repo name"},
		{"no time", func(p *Push) { p.Time = time.Time{} }, "time"},
		{"no updates", func(p *Push) { p.Updates = nil }, "no updates"},
		{"bad ref", func(p *Push) { p.Updates[0].Ref = "refs/heads/a..b" }, "update 1"},
		{"bad old", func(p *Push) { p.Updates[1].Old = "xyz" }, "old"},
		{"mixed hash", func(p *Push) { p.Updates[0].New = strings.Repeat("b", 64) }, "differ in length"},
		{"same ids", func(p *Push) { p.Updates[0].New = a }, "equal"},
		{"mixed across updates", func(p *Push) {
			p.Updates[1] = RefUpdate{Ref: "refs/heads/new", Old: ZeroSHA256, New: strings.Repeat("c", 64)}
		}, "update 2: invalid: object ids mix SHA-1"},
		{"mixed peeled", func(p *Push) { p.Updates[0].Peeled = strings.Repeat("c", 64) }, "mix SHA-1"},
		{"mixed seed", func(p *Push) {
			p.Seed = true
			p.Updates = []RefUpdate{{Ref: "refs/heads/a", New: a}, {Ref: "refs/heads/b", New: strings.Repeat("c", 64)}}
		}, "update 2: invalid: object ids mix"},
		{"dup ref", func(p *Push) { p.Updates[1].Ref = "refs/heads/main" }, "twice"},
		{"pusher control", func(p *Push) { p.Pusher = "a\nb" }, "pusher"},
		{"bad enriched", func(p *Push) { p.Updates[0].Enriched = "lots" }, "enriched"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good()
			tc.mutate(&p)
			err := p.Validate()
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
	seed := Push{ID: "s", Repo: "acme/app", Time: time.Unix(1, 0), Seed: true, Updates: []RefUpdate{{Ref: "refs/heads/main", New: a}}}
	if err := seed.Validate(); err != nil {
		t.Fatal(err)
	}
	if evs := seed.Events(); len(evs) != 1 || evs[0].Kind != KindSync || evs[0].Refs != 1 {
		t.Fatalf("seed events = %+v", evs)
	}
}

func FuzzValidateRef(f *testing.F) {
	for _, s := range []string{"refs/heads/main", "refs/heads/a..b", "refs/tags/v1", "refs/heads/x.lock", "refs/heads/a\nb", "refs/heads/@{"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateRef(s) != nil {
			return
		}
		// A valid ref can never break an SSE frame or a Redis key layout.
		if strings.ContainsAny(s, "\r\n\x00 *?[\\:~^") || !strings.HasPrefix(s, "refs/") || strings.Contains(s, "..") {
			t.Fatalf("accepted unsafe ref %q", s)
		}
		// Every valid ref a pattern may be as long as is matched by itself
		// as an exact pattern; a longer one is refused naming the limit
		// (refs may be up to MaxRefLen, patterns MaxRefPatternLen).
		p, err := ParseRefPattern(s)
		if len(s) > MaxRefPatternLen {
			if err == nil || !strings.Contains(err.Error(), "limit: ref pattern length") {
				t.Fatalf("valid ref of %d bytes as a pattern: %v, want the pattern length limit", len(s), err)
			}
			return
		}
		if err != nil || !p.Match(s) {
			t.Fatalf("valid ref %q is not a pattern matching itself: %v", s, err)
		}
	})
}
