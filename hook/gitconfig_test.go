package hook

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// configCases are config files with the syntax git accepts and some it
// refuses; each is compared with what the real git makes of it.
var configCases = []struct{ name, text string }{
	{"plain", "[refcast]\n\turl = http://node:8080\n\trepo = acme/app\n"},
	{"case of section and key", "[RefCast]\n\tURL = a\n\tRepoMap = b\n"},
	{"subsection keeps case", "[refcast \"Sub Section\"]\n\tKey = v\n"},
	{"old dotted subsection", "[refcast.Sub]\n\tkey = v\n"},
	{"quoted value", "[refcast]\n\turl = \"  spaced  \"\n"},
	{"partly quoted", "[refcast]\n\turl = a\" b \"c\n"},
	{"escapes", "[refcast]\n\turl = a\\tb\\nc\\\\d\\\"e\\bf\n"},
	{"escape in quotes", "[refcast]\n\turl = \"a\\\"b\\\\c\"\n"},
	{"continuation", "[refcast]\n\trepoMap = ^/srv/(.+)\\\n=$1\n"},
	{"continuation in quotes", "[refcast]\n\turl = \"a\\\nb\"\n"},
	{"trailing comments", "[refcast] ; section comment\n\turl = a # comment\n\trepo = b;c\n\ttoken = \"x#y\" ; z\n"},
	{"comment lines", "# top\n; also\n[refcast]\n# inside\n\turl = a\n"},
	{"boolean without value", "[refcast]\n\tflushBackground\n\turl = a\n"},
	{"empty value", "[refcast]\n\turl =\n\trepo = \"\"\n"},
	{"repeated keys", "[refcast]\n\trepoMap = a\n\trepoMap = b\n[core]\n\tbare = true\n[refcast]\n\trepoMap = c\n"},
	{"internal whitespace", "[refcast]\n\turl = a  b\tc\n"},
	{"empty quotes then space", "[refcast]\n\turl = \"\" a\n"},
	{"spaces around =", "[refcast]\nurl=a\nrepo   =   b   \n"},
	{"CRLF", "[refcast]\r\n\turl = a\r\n\trepo = b \r\n"},
	{"lone CR", "[refcast]\n\turl = a\rb\n"},
	{"BOM", "\xef\xbb\xbf[refcast]\n\turl = a\n"},
	{"no final newline", "[refcast]\n\turl = a"},
	{"key after header on one line", "[refcast] url = a\n"},
	{"subsection escapes", "[refcast \"a\\\"b\\\\c\\d\"]\n\tk = v\n"},
	{"dashes and digits", "[refcast]\n\tenrich-budget2 = 1s\n"},
	{"non-ASCII value", "[refcast]\n\trepo = café/ünï\n"},
	{"include", "[include]\n\tpath = other\n[refcast]\n\turl = a\n"},
	{"includeIf", "[includeIf \"gitdir:/x/\"]\n\tpath = other\n"},
	{"empty file", ""},
	// git refuses these.
	{"unterminated quote", "[refcast]\n\turl = \"a\n"},
	{"unknown escape", "[refcast]\n\turl = a\\qb\n"},
	{"key with comment, no value", "[refcast]\n\turl ; c\n"},
	{"key before section", "url = a\n"},
	{"bad section char", "[ref_cast]\n\turl = a\n"},
	{"space before ]", "[refcast \"x\" ]\n\turl = a\n"},
	{"unclosed header", "[refcast\n\turl = a\n"},
	{"empty header", "[]\n\turl = a\n"},
	{"key starting with digit", "[refcast]\n\t1url = a\n"},
	{"partial BOM", "\xef\xbb[refcast]\n"},
	{"subsection over a newline", "[refcast \"a\nb\"]\n"},
	{"key without =", "[refcast]\n\turl a\n"},
}

// gitConfigList is what `git config -f path -z --list` makes of a file,
// or ok=false when git refuses it.
func gitConfigList(t testing.TB, path string) (vars []configVar, ok bool) {
	t.Helper()
	out, err := exec.Command(gitBin, "config", "-f", path, "-z", "--list").Output()
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("git config: %v", err)
		}
		return nil, false
	}
	return parseConfigZ(out), true
}

// parseConfigZ splits git config -z output: "name\nvalue\0", or "name\0"
// for a key without a value.
func parseConfigZ(out []byte) []configVar {
	var vars []configVar
	for entry := range strings.SplitSeq(string(out), "\x00") {
		if entry == "" {
			continue
		}
		k, v, hasValue := strings.Cut(entry, "\n")
		vars = append(vars, configVar{Name: k, Value: v, NoValue: !hasValue})
	}
	return vars
}

// checkLikeGit compares parseGitConfig with git on one file's text: the
// same variables in the same order, and an error wherever git refuses the
// file. The parser may refuse a file git accepts only for a NUL byte (the
// caller then asks git).
func checkLikeGit(t *testing.T, dir, text string) {
	t.Helper()
	path := filepath.Join(dir, "config")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	want, gitOK := gitConfigList(t, path)
	got, err := parseGitConfig([]byte(text))
	switch {
	case !gitOK && err == nil:
		t.Fatalf("%q: git refuses it, the parser gave %+v", text, got)
	case gitOK && err != nil && !bytes.Contains([]byte(text), []byte{0}):
		t.Fatalf("%q: git gives %+v, the parser: %v", text, want, err)
	case gitOK && err == nil && !slices.Equal(got, want):
		t.Fatalf("%q:\n parser %+v\n git    %+v", text, got, want)
	}
}

func TestParseGitConfigLikeGit(t *testing.T) {
	t.Parallel()
	for _, tc := range configCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkLikeGit(t, t.TempDir(), tc.text)
		})
	}
}

func TestHasInclude(t *testing.T) {
	t.Parallel()
	for text, want := range map[string]bool{
		"[include]\npath = x\n":                 true,
		"[Include]\nPath = x\n":                 true,
		"[includeIf \"onbranch:main\"]\npath=x": true,
		"[includeif \"gitdir:x\"]\n":            false, // a header alone includes nothing
		"[refcast]\ninclude = x\n":              false,
		"[refcast \"include\"]\npath = x\n":     false,
	} {
		vars, err := parseGitConfig([]byte(text))
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if got := hasInclude(vars); got != want {
			t.Errorf("%q: hasInclude %v, want %v", text, got, want)
		}
	}
}

// FuzzParseGitConfig compares the parser with the real git on arbitrary
// files (go test -fuzz FuzzParseGitConfig ./hook/). Each input runs git
// once, so it finds a few hundred inputs a second.
func FuzzParseGitConfig(f *testing.F) {
	for _, tc := range configCases {
		f.Add(tc.text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		checkLikeGit(t, t.TempDir(), text)
	})
}
