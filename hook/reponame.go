package hook

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/refcast/refcast/bus"
)

// NameRule maps a repository path to a repo name: Regexp is matched against
// the repository's absolute path (Repo.Path) and, when it matches, Template
// is expanded with regexp.Expand ($1, ${name}).
type NameRule struct {
	Regexp   *regexp.Regexp
	Template string
}

// ParseNameRule parses "REGEX=TEMPLATE", split at the last '=' (templates
// hold no '='), e.g. `^/srv/git/(.+?)(\.git)?$=$1`.
func ParseNameRule(s string) (NameRule, error) {
	i := strings.LastIndexByte(s, '=')
	if i <= 0 {
		return NameRule{}, fmt.Errorf("repo map %q: want REGEX=TEMPLATE", s)
	}
	re, err := regexp.Compile(s[:i])
	if err != nil {
		return NameRule{}, fmt.Errorf("repo map %q: %w", s, err)
	}
	if s[i+1:] == "" {
		return NameRule{}, fmt.Errorf("repo map %q: empty template", s)
	}
	return NameRule{Regexp: re, Template: s[i+1:]}, nil
}

// Apply returns the rule's name for path and whether the rule matched.
func (r NameRule) Apply(path string) (string, bool) {
	m := r.Regexp.FindStringSubmatchIndex(path)
	if m == nil {
		return "", false
	}
	return string(r.Regexp.ExpandString(nil, r.Template, path, m)), true
}

// NameInput is everything a repo name can come from, in the order
// ResolveRepoName consults it. The caller fills it from flags, environment
// and git config; empty fields are skipped.
type NameInput struct {
	Flag    string     // --repo
	Config  string     // git config refcast.repo
	Env     string     // REFCAST_REPO
	Hosting string     // GL_PROJECT_PATH: the name GitLab gives hooks (hashed storage paths say nothing)
	Rules   []NameRule // --repo-map / REFCAST_REPO_MAP / refcast.repoMap; the first that matches wins
	Root    string     // REFCAST_REPO_ROOT / refcast.root: the name is the path below it
	Path    string     // the repository's absolute path (Repo.Path)
}

// ResolveRepoName picks the repo name: the first non-empty of Flag, Config,
// Env and Hosting; else the first matching rule; else the default rule: the
// path relative to Root when Root is set, else the path's base name, either
// without a trailing ".git". The result must pass bus.ValidateRepo. from
// says which source won, for messages.
func ResolveRepoName(in NameInput) (name, from string, err error) {
	switch {
	case in.Flag != "":
		name, from = in.Flag, "--repo"
	case in.Config != "":
		name, from = in.Config, "git config refcast.repo"
	case in.Env != "":
		name, from = in.Env, "REFCAST_REPO"
	case in.Hosting != "":
		name, from = in.Hosting, "GL_PROJECT_PATH"
	}
	if from == "" {
		path := filepath.ToSlash(filepath.Clean(in.Path))
		for _, r := range in.Rules {
			if n, ok := r.Apply(path); ok {
				name, from = n, fmt.Sprintf("repo map %s=%s", r.Regexp, r.Template)
				break
			}
		}
		if from == "" {
			name, from, err = defaultRepoName(path, in.Root)
			if err != nil {
				return "", from, err
			}
		}
	}
	if err := bus.ValidateRepo(name); err != nil {
		return "", from, fmt.Errorf("repo name from %s: %w (set --repo, REFCAST_REPO, git config refcast.repo or a --repo-map rule)", from, err)
	}
	return name, from, nil
}

func defaultRepoName(path, root string) (name, from string, err error) {
	if root == "" {
		return strings.TrimSuffix(filepath.Base(path), ".git"), "the repository directory's name", nil
	}
	from = "the path below " + root
	rel, err := filepath.Rel(filepath.Clean(root), path)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", from, fmt.Errorf("repository %s is not below the repo root %s", path, root)
	}
	return strings.TrimSuffix(filepath.ToSlash(rel), ".git"), from, nil
}
