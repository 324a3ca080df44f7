package auth

import (
	"net/http"

	"github.com/refcast/refcast/wire"
)

// Where a token travels, besides the Authorization header.
const (
	// CookieName is the cookie a browser dashboard keeps its token in.
	CookieName = "refcast_token"
	// QueryParam carries a token for clients that cannot set headers
	// (a browser's EventSource). URLs end up in access logs: see
	// docs/security.md.
	QueryParam = wire.ParamAccessToken
)

// TokenFromRequest returns the request's token: the Authorization Bearer
// header, else the refcast_token cookie, else the access_token query
// parameter; "" when none is present. Use it for reads. Publishing should
// take BearerToken only: a cookie rides along with cross-site requests.
func TokenFromRequest(r *http.Request) string {
	if t := BearerToken(r); t != "" {
		return t
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		return c.Value
	}
	return r.URL.Query().Get(QueryParam)
}

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header, or "": the protocol's one parser, wire.BearerToken, which the
// node's publish endpoint uses too.
func BearerToken(r *http.Request) string { return wire.BearerToken(r) }
