package hook

import (
	"strings"
	"testing"
)

func TestResolveRepoName(t *testing.T) {
	t.Parallel()
	rule := func(s string) NameRule {
		r, err := ParseNameRule(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	srv := rule(`^/srv/git/(.+?)(\.git)?$=$1`)
	gitea := rule(`^/data/gitea-repositories/([^/]+)/([^/]+?)(\.git)?$=$1/$2`)
	cases := []struct {
		name, want, from, err string
		in                    NameInput
	}{
		{name: "flag wins", in: NameInput{Flag: "acme/app", Config: "x/y", Env: "e/f", Path: "/srv/git/z.git"}, want: "acme/app", from: "--repo"},
		{name: "config before env", in: NameInput{Config: "x/y", Env: "e/f", Path: "/srv/git/z.git"}, want: "x/y", from: "git config"},
		{name: "env", in: NameInput{Env: "e/f", Hosting: "g/h", Path: "/srv/git/z.git"}, want: "e/f", from: "REFCAST_REPO"},
		{name: "gitlab project path", in: NameInput{Hosting: "group/sub/proj", Rules: []NameRule{srv}, Path: "/var/opt/gitlab/git-data/repositories/@hashed/6b/86/6b86b273ff34fce19d6b804eff5a3f5747ada4ea22f1d49c01e52ddb7875b4b.git"}, want: "group/sub/proj", from: "GL_PROJECT_PATH"},
		{name: "gitlab hashed without project path fails", in: NameInput{Root: "/var/opt/gitlab/git-data/repositories", Path: "/var/opt/gitlab/git-data/repositories/@hashed/6b/86/6b86b2.git"}, err: "character '@' not allowed"},
		{name: "map rule", in: NameInput{Rules: []NameRule{srv}, Path: "/srv/git/acme/app.git"}, want: "acme/app", from: "repo map"},
		{name: "map rule without .git", in: NameInput{Rules: []NameRule{srv}, Path: "/srv/git/acme/app"}, want: "acme/app"},
		{name: "first matching rule", in: NameInput{Rules: []NameRule{gitea, srv}, Path: "/data/gitea-repositories/alice/dotfiles.git"}, want: "alice/dotfiles"},
		{name: "no rule matches: default", in: NameInput{Rules: []NameRule{srv}, Path: "/home/git/tools.git"}, want: "tools", from: "directory's name"},
		{name: "root", in: NameInput{Root: "/srv/git/", Path: "/srv/git/acme/app.git"}, want: "acme/app", from: "below /srv/git"},
		{name: "outside root", in: NameInput{Root: "/srv/git", Path: "/home/x.git"}, err: "not below"},
		{name: "work tree", in: NameInput{Path: "/home/alice/src/app"}, want: "app"},
		{name: "invalid result", in: NameInput{Flag: "acme/app.git"}, err: "must not end in .git"},
		{name: "invalid map result", in: NameInput{Rules: []NameRule{rule(`^/(.*)$=x/$1`)}, Path: "/a b"}, err: "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, from, err := ResolveRepoName(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || !strings.Contains(from, tc.from) {
				t.Fatalf("got %q from %q, %v; want %q from %q", got, from, err, tc.want, tc.from)
			}
		})
	}
}

func TestParseNameRule(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "noequals", "=x", "(=x", "^a$="} {
		if _, err := ParseNameRule(bad); err == nil {
			t.Errorf("ParseNameRule(%q) succeeded", bad)
		}
	}
	r, err := ParseNameRule(`^/x/(?P<n>[a-z]+)=${n}`)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Apply("/x/abc"); !ok || got != "abc" {
		t.Fatalf("Apply = %q %v", got, ok)
	}
}
