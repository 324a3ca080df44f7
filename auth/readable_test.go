package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestReadable(t *testing.T) {
	a := newAuth(t, Config{
		SecretFile: writeFile(t, "secret", testSecret),
		Public:     []string{"oss/**", "acme/docs"},
	})
	alice := mint(t, Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"},
		Read:             []string{"acme/*:refs/heads/*", "solo/one"},
	}, time.Hour, testNow)
	expired := mint(t, Claims{Read: []string{"**"}}, time.Minute, testNow.Add(-2*time.Minute))

	tests := []struct {
		name  string
		token string
		see   []string
		hide  []string
	}{
		{"anonymous sees public repos only", "", []string{"oss/a", "oss/x/y", "acme/docs"}, []string{"acme/app", "solo/one", "other/x"}},
		{"a token adds its read claims, ref-limited ones too", alice, []string{"oss/a", "acme/docs", "acme/app", "solo/one"}, []string{"acme/x/y", "solo/two", "other/x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := a.Readable(tc.token)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.see {
				if !ok(r) {
					t.Errorf("%s hidden, want readable", r)
				}
			}
			for _, r := range tc.hide {
				if ok(r) {
					t.Errorf("%s readable, want hidden", r)
				}
			}
		})
	}
	t.Run("an invalid token is refused", func(t *testing.T) {
		for _, tok := range []string{expired, "not-a-jwt"} {
			if _, err := a.Readable(tok); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("Readable(%.10s…) = %v, want ErrUnauthenticated", tok, err)
			}
		}
	})
	t.Run("authorization off: everything", func(t *testing.T) {
		off := newAuth(t, Config{})
		ok, err := off.Readable("")
		if err != nil || !ok("any/repo") {
			t.Fatalf("Readable = %v, want every repo", err)
		}
	})
}
