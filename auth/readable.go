package auth

import "github.com/refcast/refcast/bus"

// Readable returns a predicate for the repos a credential may read at
// least one ref of: every repo when authorization is off, the public globs'
// repos for an empty token, and besides those the repos of the token's read
// claims. It verifies the token once, so a caller listing many repos (GET
// /v1/repos, name suggestions) does not verify it per repo. A token that is
// given but not valid is refused as AuthorizeRead refuses it.
//
// A claim limited to some refs ("acme/*:refs/heads/*") still makes its
// repos readable here: the holder can subscribe to those refs.
func (a *Authorizer) Readable(token string) (func(repo string) bool, error) {
	if !a.Enabled() {
		return func(string) bool { return true }, nil
	}
	public := func(repo string) bool {
		for _, p := range a.public {
			if p.Match(repo) {
				return true
			}
		}
		return false
	}
	if token == "" {
		return public, nil
	}
	_, pc, err := a.verify(token)
	if err != nil {
		return nil, err
	}
	return func(repo string) bool {
		if public(repo) {
			return true
		}
		for _, c := range pc.read {
			if c.Repo.Match(repo) {
				return true
			}
		}
		return false
	}, nil
}

// ReadableRefs returns which refs of repo (a name, not a glob) the
// credential reads: all of them (a nil predicate) when the repo is public,
// authorization is off, or a read claim covers every ref; otherwise those
// the claims' ref patterns match, for git's ref advertisement, which must
// leave out what a limited token may not see. Like AuthorizeRead, it
// refuses a missing token for a private repo (ErrUnauthenticated) and a
// token with no claim on the repo (ErrForbidden).
func (a *Authorizer) ReadableRefs(token, repo string) (func(ref string) bool, error) {
	if !a.Enabled() {
		return nil, nil
	}
	for _, p := range a.public {
		if p.Match(repo) {
			return nil, nil
		}
	}
	if token == "" {
		return nil, unauthenticated("a token is required to read repo %q", repo)
	}
	_, pc, err := a.verify(token)
	if err != nil {
		return nil, err
	}
	var refs []bus.RefPattern
	for _, c := range pc.read {
		if !c.Repo.Match(repo) {
			continue
		}
		if c.Ref == nil {
			return nil, nil
		}
		refs = append(refs, *c.Ref)
	}
	if len(refs) == 0 {
		return nil, forbidden("not allowed to read repo %q", repo)
	}
	return func(ref string) bool {
		for _, p := range refs {
			if p.Match(ref) {
				return true
			}
		}
		return false
	}, nil
}
