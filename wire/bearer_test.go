package wire

import (
	"net/http"
	"strings"
	"testing"
)

var bearerCases = []struct {
	name, header, want string
}{
	{"canonical", "Bearer abc.def", "abc.def"},
	{"lower case scheme", "bearer abc", "abc"},
	{"upper case scheme", "BEARER abc", "abc"},
	{"mixed case scheme", "bEaReR abc", "abc"},
	{"several spaces", "Bearer    abc", "abc"},
	{"tab", "Bearer\tabc", "abc"},
	{"trailing space", "Bearer abc  ", "abc"},
	{"leading space", "  Bearer abc", "abc"},
	{"base64 padding", "Bearer YWJj==", "YWJj=="},
	{"space inside token kept", "Bearer a b", "a b"},
	{"empty", "", ""},
	{"scheme only", "Bearer", ""},
	{"scheme and space", "Bearer ", ""},
	{"scheme and spaces", "Bearer   \t ", ""},
	{"no separator", "Bearerabc", ""},
	{"other scheme", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", ""},
	{"scheme prefix of another", "Bear abc", ""},
	{"token only", "abc", ""},
}

func TestParseBearer(t *testing.T) {
	t.Parallel()
	for _, tc := range bearerCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseBearer(tc.header); got != tc.want {
				t.Fatalf("ParseBearer(%q) = %q, want %q", tc.header, got, tc.want)
			}
			r, _ := http.NewRequest(http.MethodGet, "http://node"+PathEvents, nil)
			if tc.header != "" {
				r.Header.Set(HeaderAuthorization, tc.header)
			}
			if got := BearerToken(r); got != tc.want {
				t.Fatalf("BearerToken with %q = %q, want %q", tc.header, got, tc.want)
			}
		})
	}
}

func TestBearerRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"s3cret", "eyJhbGciOiJFZERTQSJ9.e30.sig", "a=="} {
		if got := ParseBearer(Bearer(tok)); got != tok {
			t.Errorf("ParseBearer(Bearer(%q)) = %q", tok, got)
		}
	}
}

// FuzzParseBearer: never panics; a token found is a suffix of the header
// without surrounding white space, and only after a Bearer scheme; what
// Bearer writes parses back.
func FuzzParseBearer(f *testing.F) {
	for _, tc := range bearerCases {
		f.Add(tc.header)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok := ParseBearer(h)
		if tok != "" {
			if !strings.HasSuffix(strings.TrimRight(h, " \t"), tok) {
				t.Fatalf("ParseBearer(%q) = %q: not the header's tail", h, tok)
			}
			if tok != strings.Trim(tok, " \t") {
				t.Fatalf("ParseBearer(%q) = %q: surrounding white space", h, tok)
			}
			if s := strings.TrimLeft(h, " \t"); len(s) < 7 || !strings.EqualFold(s[:6], "bearer") {
				t.Fatalf("ParseBearer(%q) = %q without a Bearer scheme", h, tok)
			}
		}
		if trimmed := strings.Trim(h, " \t"); trimmed != "" {
			if got := ParseBearer(Bearer(trimmed)); got != trimmed {
				t.Fatalf("ParseBearer(Bearer(%q)) = %q", trimmed, got)
			}
		}
	})
}
