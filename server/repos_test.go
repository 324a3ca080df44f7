package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
)

// globAuth is a test Authorizer: each token reads the repos its globs
// match; public globs are readable without one. A subscription pattern is
// allowed when it is one of the globs or an exact name one matches.
type globAuth struct {
	public []string
	tokens map[string][]string
}

func (a globAuth) allows(token, pattern string) bool {
	globs := a.public
	if token != "" {
		globs = append(slices.Clone(globs), a.tokens[token]...)
	}
	for _, g := range globs {
		p, err := bus.ParseRepoPattern(g)
		if err == nil && (g == pattern || p.Match(pattern)) {
			return true
		}
	}
	return false
}

func (a globAuth) AuthorizeRead(token string, f *bus.Filter) (time.Time, error) {
	if _, ok := a.tokens[token]; token != "" && !ok {
		return time.Time{}, fmt.Errorf("%w: unknown token", ErrUnauthorized)
	}
	for _, p := range f.Repos {
		if !a.allows(token, p.String()) {
			return time.Time{}, fmt.Errorf("%w: not allowed to read %s", ErrForbidden, p)
		}
	}
	return time.Time{}, nil
}

func (a globAuth) AuthorizePublish(string, string) error { return ErrForbidden }

// globRepoAuth adds RepoAuthorizer, so listing checks the token once.
type globRepoAuth struct{ globAuth }

func (a globRepoAuth) ReadableRepos(token string) (func(string) bool, error) {
	if _, ok := a.tokens[token]; token != "" && !ok {
		return nil, fmt.Errorf("%w: unknown token", ErrUnauthorized)
	}
	return func(repo string) bool { return a.allows(token, repo) }, nil
}

// seedRepos publishes one ref to each repo.
func seedRepos(t *testing.T, n *testNode, repos ...string) {
	t.Helper()
	for i, r := range repos {
		n.publish(t, newPush(r, upd("refs/heads/main", bus.ZeroSHA1, oid(i+1))))
	}
}

type reposPage struct {
	Repos []string `json:"repos"`
	Next  string   `json:"next"`
}

func getRepos(t *testing.T, n *testNode, q string, hdr map[string]string) (reposPage, http.Header) {
	t.Helper()
	status, h, body := n.get(t, "/v1/repos?"+q, hdr)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/repos?%s: %d %s", q, status, body)
	}
	var p reposPage
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return p, h
}

func TestRepos(t *testing.T) {
	n := startNode(t, newBus(t, memory.Options{}), time.Second, nil)
	seedRepos(t, n, "demo/web", "acme/app", "demo/app", "acme/lib", "acme/x/deep", "solo")

	tests := []struct {
		name string
		q    string
		want []string
		more bool
	}{
		{"everything, sorted", "", []string{"acme/app", "acme/lib", "acme/x/deep", "demo/app", "demo/web", "solo"}, false},
		{"one glob", query("repo", "acme/*"), []string{"acme/app", "acme/lib"}, false},
		{"a deep glob", query("repo", "acme/**"), []string{"acme/app", "acme/lib", "acme/x/deep"}, false},
		{"two patterns", query("repo", "demo/*", "repo", "solo"), []string{"demo/app", "demo/web", "solo"}, false},
		{"an exact name", query("repo", "demo/app"), []string{"demo/app"}, false},
		{"nothing matches", query("repo", "none/*"), []string{}, false},
		{"a first page", query("limit", "2"), []string{"acme/app", "acme/lib"}, true},
		{"a page exactly full", query("repo", "acme/*", "limit", "2"), []string{"acme/app", "acme/lib"}, false},
		{"after a cursor", query("limit", "2", "cursor", encodeReposCursor("acme/lib")), []string{"acme/x/deep", "demo/app"}, true},
		{"after a repo that is gone", query("cursor", encodeReposCursor("b")), []string{"demo/app", "demo/web", "solo"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, h := getRepos(t, n, tc.q, nil)
			if !slices.Equal(p.Repos, tc.want) {
				t.Errorf("repos %q, want %q", p.Repos, tc.want)
			}
			if (p.Next != "") != tc.more || (h.Get("Link") != "") != tc.more {
				t.Errorf("next %q, Link %q: want a next page %v", p.Next, h.Get("Link"), tc.more)
			}
		})
	}

	t.Run("following next and Link walks every repo once", func(t *testing.T) {
		var got []string
		q := query("limit", "1")
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("more pages than repos")
			}
			p, h := getRepos(t, n, q, nil)
			got = append(got, p.Repos...)
			if p.Next == "" {
				break
			}
			link := h.Get("Link")
			want := fmt.Sprintf(`</v1/repos?cursor=%s&limit=1>; rel="next"`, url.QueryEscape(p.Next))
			if link != want {
				t.Fatalf("Link %q, want %q", link, want)
			}
			q = strings.TrimPrefix(strings.TrimSuffix(link, `>; rel="next"`), "</v1/repos?")
		}
		if want := []string{"acme/app", "acme/lib", "acme/x/deep", "demo/app", "demo/web", "solo"}; !slices.Equal(got, want) {
			t.Errorf("walked %q, want %q", got, want)
		}
	})

	bad := []struct{ name, q, msg string }{
		{"invalid glob", query("repo", "acme/**x"), "'**' must be a whole segment"},
		{"empty glob", query("repo", ""), "repo is empty"},
		{"limit zero", query("limit", "0"), "limit must be an integer from 1 to 1000"},
		{"limit too big", query("limit", "1001"), "limit must be an integer from 1 to 1000"},
		{"limit not a number", query("limit", "ten"), "limit must be an integer"},
		{"cursor of another kind", query("cursor", "c1AAAA"), "not a /v1/repos cursor"},
		{"cursor not base64", query("cursor", "r1.!!"), "not a /v1/repos cursor"},
		{"cursor not a repo", query("cursor", encodeReposCursor("a b")), "does not name a repo"},
		{"unknown parameter", query("repos", "x"), `unknown query parameter "repos"`},
	}
	for _, tc := range bad {
		t.Run("400 "+tc.name, func(t *testing.T) {
			status, _, body := n.get(t, "/v1/repos?"+tc.q, nil)
			if status != http.StatusBadRequest {
				t.Fatalf("status %d %s, want 400", status, body)
			}
			if msg := apiErrorBody(t, status, body); !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q, want it to contain %q", msg, tc.msg)
			}
		})
	}
}

func TestReposAuthorized(t *testing.T) {
	ga := globAuth{public: []string{"oss/*"}, tokens: map[string][]string{"alice": {"acme/*"}, "bob": {"acme/app"}}}
	for _, auth := range []struct {
		name string
		a    Authorizer
	}{{"per-repo AuthorizeRead", ga}, {"RepoAuthorizer", globRepoAuth{ga}}} {
		t.Run(auth.name, func(t *testing.T) {
			n := startNode(t, newBus(t, memory.Options{}), time.Second, func(o *Options) { o.Auth = auth.a })
			seedRepos(t, n, "acme/app", "acme/lib", "oss/tool", "secret/x")
			tests := []struct {
				name, token string
				want        []string
			}{
				{"anonymous: public repos", "", []string{"oss/tool"}},
				{"alice: her glob and public", "alice", []string{"acme/app", "acme/lib", "oss/tool"}},
				{"bob: his repo and public", "bob", []string{"acme/app", "oss/tool"}},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					var hdr map[string]string
					if tc.token != "" {
						hdr = map[string]string{"Authorization": "Bearer " + tc.token}
					}
					p, h := getRepos(t, n, "", hdr)
					if !slices.Equal(p.Repos, tc.want) {
						t.Errorf("repos %q, want %q", p.Repos, tc.want)
					}
					if cc := h.Get("Cache-Control"); !strings.HasPrefix(cc, "private") {
						t.Errorf("Cache-Control %q: a listing depends on the credential", cc)
					}
				})
			}
			t.Run("a page is full of visible repos only", func(t *testing.T) {
				p, _ := getRepos(t, n, query("limit", "1", "cursor", encodeReposCursor("acme/app")), map[string]string{"Authorization": "Bearer bob"})
				if !slices.Equal(p.Repos, []string{"oss/tool"}) || p.Next != "" {
					t.Errorf("page %+v, want oss/tool and no next", p)
				}
			})
		})
	}
	t.Run("an invalid token is 401", func(t *testing.T) {
		n := startNode(t, newBus(t, memory.Options{}), time.Second, func(o *Options) { o.Auth = globRepoAuth{ga} })
		status, _, body := n.get(t, "/v1/repos", map[string]string{"Authorization": "Bearer mallory"})
		if status != http.StatusUnauthorized {
			t.Fatalf("status %d %s, want 401", status, body)
		}
		apiErrorBody(t, status, body)
	})
}

func TestHint(t *testing.T) {
	// alice may read a few demo repos and Other/*, not demo/apq-secret
	// (spelled close to her typo) nor other/app (her owner but for case).
	ga := globAuth{tokens: map[string][]string{
		"alice": {"demo/ap", "demo/app", "demo/web", "demo/none", "Demo/App", "Other/*"},
		"root":  {"**"},
	}}
	n := startNode(t, newBus(t, memory.Options{}), time.Second, func(o *Options) { o.Auth = globRepoAuth{ga} })
	seedRepos(t, n, "demo/app", "demo/web", "demo/apq-secret", "other/app")

	tests := []struct {
		name    string
		repos   []string
		ref     string
		want    []string // substrings of the hint; nil: no hint
		notWant []string
	}{
		{"an exact typo", []string{"demo/ap"}, "", []string{"no refs known for demo/ap", "demo/app"}, []string{"demo/apq-secret"}},
		{"a case typo", []string{"Demo/App"}, "", []string{"no refs known for Demo/App", "known repos like it: demo/app"}, nil},
		{"no readable repo of the owner", []string{"Other/x"}, "", []string{"no refs known for Other/x and no readable repo of owner Other"}, []string{"other/app"}},
		{"a repo that exists", []string{"demo/app"}, "", nil, nil},
		{"refs filtered out is not missing", []string{"demo/app"}, "refs/tags/*", nil, nil},
		{"a glob subscription", []string{"Other/*"}, "", nil, nil},
		{"the missing one of two", []string{"demo/web", "demo/none"}, "", []string{"no refs known for demo/none"}, []string{"demo/web;", "for demo/web"}},
	}
	check := func(t *testing.T, hint string, want, notWant []string) {
		t.Helper()
		if want == nil && hint != "" {
			t.Errorf("hint %q, want none", hint)
		}
		for _, w := range want {
			if !strings.Contains(hint, w) {
				t.Errorf("hint %q, want it to contain %q", hint, w)
			}
		}
		for _, w := range notWant {
			if strings.Contains(hint, w) {
				t.Errorf("hint %q must not contain %q", hint, w)
			}
		}
		if strings.Contains(hint, "apq-secret") {
			t.Errorf("hint %q names a repo the token may not read", hint)
		}
	}
	hdr := map[string]string{"Authorization": "Bearer alice"}
	for _, tc := range tests {
		kv := []string{}
		for _, r := range tc.repos {
			kv = append(kv, "repo", r)
		}
		if tc.ref != "" {
			kv = append(kv, "ref", tc.ref)
		}
		q := query(kv...)
		t.Run("Refs snapshot: "+tc.name, func(t *testing.T) {
			status, _, body := n.get(t, "/v1/refs?"+q, hdr)
			if status != http.StatusOK {
				t.Fatalf("status %d %s", status, body)
			}
			var snap struct {
				Cursor string          `json:"cursor"`
				Repos  json.RawMessage `json:"repos"`
				Hint   string          `json:"hint"`
			}
			if err := json.Unmarshal(body, &snap); err != nil || snap.Cursor == "" || snap.Repos == nil {
				t.Fatalf("body %s: the snapshot's fields must stay (%v)", body, err)
			}
			check(t, snap.Hint, tc.want, tc.notWant)
		})
		t.Run("Events hello: "+tc.name, func(t *testing.T) {
			s := n.subscribe(t, q, hdr)
			defer s.close()
			_, hello := s.opening()
			var h struct {
				Cursor, Hint string
			}
			if err := json.Unmarshal([]byte(hello.Data), &h); err != nil {
				t.Fatal(err)
			}
			check(t, h.Hint, tc.want, tc.notWant)
		})
	}
	t.Run("a resuming stream carries no hint", func(t *testing.T) {
		status, _, body := n.get(t, "/v1/refs?"+query("repo", "demo/ap"), hdr)
		var snap struct{ Cursor string }
		if status != http.StatusOK || json.Unmarshal(body, &snap) != nil {
			t.Fatalf("snapshot %d %s", status, body)
		}
		s := n.subscribe(t, query("repo", "demo/ap", "since", snap.Cursor), hdr)
		defer s.close()
		_, hello := s.opening()
		if strings.Contains(hello.Data, "hint") {
			t.Errorf("hello %s: a client that resumes was told at its first hello", hello.Data)
		}
	})
	t.Run("a token that sees everything gets the hidden repo suggested", func(t *testing.T) {
		_, _, body := n.get(t, "/v1/refs?"+query("repo", "demo/ap"), map[string]string{"Authorization": "Bearer root"})
		if !strings.Contains(string(body), "demo/apq-secret") {
			t.Errorf("body %s: want demo/apq-secret suggested to a token that may read it", body)
		}
	})
}

func TestSuggestBounds(t *testing.T) {
	var all []string
	for i := range 20 {
		all = append(all, fmt.Sprintf("big/repo%02d", i))
	}
	all = append(all, "Big/Rep")
	got := suggest("big/rep", all, func(string) bool { return true })
	if len(got) != maxSuggestions || got[0] != "Big/Rep" {
		t.Errorf("suggest = %q: want %d, the case-insensitive match first", got, maxSuggestions)
	}
}

func FuzzReposCursor(f *testing.F) {
	for _, s := range []string{"", "r1.", encodeReposCursor("acme/app"), "c1AAAA", "r1.!!", encodeReposCursor("a b")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		repo, err := decodeReposCursor(s)
		if err != nil {
			return
		}
		if bus.ValidateRepo(repo) != nil {
			t.Fatalf("decoded %q is not a repo name", repo)
		}
		if got, err := decodeReposCursor(encodeReposCursor(repo)); err != nil || got != repo {
			t.Fatalf("round trip of %q: %q, %v", repo, got, err)
		}
	})
}
