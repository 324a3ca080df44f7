package auth

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
