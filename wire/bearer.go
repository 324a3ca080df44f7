package wire

import (
	"net/http"
	"strings"
)

// bearerScheme is the Authorization scheme of a token (RFC 6750).
const bearerScheme = "Bearer"

// Bearer returns the Authorization header value that carries token.
func Bearer(token string) string { return bearerScheme + " " + token }

// ParseBearer returns the token of an Authorization header value
// "Bearer <token>", or "" when the value is not one. The scheme is
// case-insensitive (RFC 7235 §2.1), and one or more spaces or tabs may
// separate it from the token; white space around the token is dropped. The
// token itself is not checked against RFC 6750's token68 alphabet: a
// shared publish token is whatever the operator chose, and a JWT is
// checked by its verifier.
func ParseBearer(v string) string {
	v = strings.Trim(v, " \t")
	if len(v) <= len(bearerScheme) || !strings.EqualFold(v[:len(bearerScheme)], bearerScheme) {
		return ""
	}
	rest := v[len(bearerScheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		return "" // "Bearerx": another scheme
	}
	return strings.TrimLeft(rest, " \t")
}

// BearerToken returns the token of r's Authorization header (see
// ParseBearer), or "".
func BearerToken(r *http.Request) string {
	return ParseBearer(r.Header.Get(HeaderAuthorization))
}
