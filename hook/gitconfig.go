package hook

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// configVar is one variable of a git config file, as git's own parser
// hands it on: Name is "section.key" or "section.subsection.key" with the
// section and key lowercased and a quoted subsection as written; NoValue
// marks a key without "=" (git's implicit true, printed without a value by
// git config -z).
type configVar struct {
	Name    string
	Value   string
	NoValue bool
}

// errConfigSyntax is a config file git itself would refuse ("bad config
// line"). The caller falls back to git config, which says so precisely.
var errConfigSyntax = errors.New("bad config line")

// parseGitConfig parses a git config file the way git 2.39's config.c
// (git_parse_source, get_base_var, get_value, parse_value) does, and
// returns its variables in file order. It is a port rather than go-git's
// parser (plumbing/format/config, on gcfg) because that one differs from
// git on values a hand-edited file may hold: a tab inside an unquoted value
// (git: one space; gcfg: a tab), a backslash-newline continuation (git:
// nothing; gcfg: a newline), `"" a` (git: "a"; gcfg: " a") and a lone CR
// (git: a space; gcfg: dropped); each checked against git config -z.
//
// Includes are not followed: a caller that finds an include.* or
// includeIf.* variable must ask git. A NUL byte anywhere is an error here
// (git would cut the value at it): the caller asks git then, too.
func parseGitConfig(data []byte) ([]configVar, error) {
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, fmt.Errorf("%w: NUL byte", errConfigSyntax)
	}
	// A UTF-8 byte order mark is skipped; a partial one is an error.
	if len(data) > 0 && data[0] == 0xef {
		if !bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
			return nil, fmt.Errorf("%w 1: partial byte order mark", errConfigSyntax)
		}
		data = data[3:]
	}
	p := &configParser{src: data, line: 1}
	var vars []configVar
	var section []byte // "section." or "section.subsection."; nil before the first header
	comment := false
	for {
		c := p.next()
		if c == '\n' {
			if p.eof {
				return vars, nil
			}
			comment = false
			continue
		}
		switch {
		case comment, isConfigSpace(c):
			continue
		case c == '#' || c == ';':
			comment = true
			continue
		case c == '[':
			name, ok := p.baseVar()
			if !ok || len(name) == 0 {
				return nil, p.errorf("section header")
			}
			section = append(name, '.')
			continue
		case !isASCIIAlpha(c):
			return nil, p.errorf("unexpected %q", c)
		}
		v, ok := p.value(append(append([]byte(nil), section...), toLowerASCII(c)))
		if !ok {
			return nil, p.errorf("variable")
		}
		vars = append(vars, v)
	}
}

// configParser reads a config file a character at a time, as git's
// get_next_char does: CR LF reads as LF, and the end of the file reads as
// LF (with eof set) as often as it is asked.
type configParser struct {
	src  []byte
	pos  int
	line int
	eof  bool
}

func (p *configParser) next() byte {
	if p.pos >= len(p.src) {
		p.eof = true
		return '\n'
	}
	c := p.src[p.pos]
	p.pos++
	if c == '\r' && p.pos < len(p.src) && p.src[p.pos] == '\n' {
		c = '\n'
		p.pos++
	}
	if c == '\n' {
		p.line++
	}
	return c
}

func (p *configParser) errorf(what string, args ...any) error {
	return fmt.Errorf("%w %d: %s", errConfigSyntax, p.line, fmt.Sprintf(what, args...))
}

// baseVar reads a section header after '[': `section]`,
// `section "subsection"]` or the old `section.subsection]`, lowercased
// except a quoted subsection (git's get_base_var and
// get_extended_base_var).
func (p *configParser) baseVar() ([]byte, bool) {
	var name []byte
	for {
		c := p.next()
		switch {
		case p.eof:
			return nil, false
		case c == ']':
			return name, true
		case isConfigSpace(c):
			return p.extendedBaseVar(name, c)
		case !isKeyChar(c) && c != '.':
			return nil, false
		}
		name = append(name, toLowerASCII(c))
	}
}

func (p *configParser) extendedBaseVar(name []byte, c byte) ([]byte, bool) {
	for {
		if c == '\n' {
			return nil, false
		}
		c = p.next()
		if !isConfigSpace(c) {
			break
		}
	}
	if c != '"' {
		return nil, false
	}
	name = append(name, '.')
	for {
		c := p.next()
		if c == '\n' {
			return nil, false
		}
		if c == '"' {
			break
		}
		if c == '\\' {
			if c = p.next(); c == '\n' {
				return nil, false
			}
		}
		name = append(name, c)
	}
	return name, p.next() == ']'
}

// value reads the rest of a variable's name (its first letter is in name)
// and its value, through the end of its line (git's get_value).
func (p *configParser) value(name []byte) (configVar, bool) {
	var c byte
	for {
		c = p.next()
		if p.eof || !isKeyChar(c) {
			break
		}
		name = append(name, toLowerASCII(c))
	}
	for c == ' ' || c == '\t' {
		c = p.next()
	}
	if c == '\n' {
		return configVar{Name: string(name), NoValue: true}, true
	}
	if c != '=' {
		return configVar{}, false
	}
	v, ok := p.parseValue()
	return configVar{Name: string(name), Value: v}, ok
}

// parseValue is git's parse_value: whitespace outside quotes is dropped at
// the ends and each character of it becomes one space inside; '#' and ';'
// outside quotes start a comment; \t \b \n \\ \" are escapes and a
// backslash before the end of a line continues the value on the next.
func (p *configParser) parseValue() (string, bool) {
	var v []byte
	quote, comment, space := false, false, 0
	for {
		c := p.next()
		if c == '\n' {
			if quote {
				return "", false
			}
			return string(v), true
		}
		if comment {
			continue
		}
		if isConfigSpace(c) && !quote {
			if len(v) > 0 {
				space++
			}
			continue
		}
		if !quote && (c == ';' || c == '#') {
			comment = true
			continue
		}
		for ; space > 0; space-- {
			v = append(v, ' ')
		}
		switch c {
		case '\\':
			switch c = p.next(); c {
			case '\n':
				continue
			case 't':
				c = '\t'
			case 'b':
				c = '\b'
			case 'n':
				c = '\n'
			case '\\', '"':
			default:
				return "", false
			}
			v = append(v, c)
		case '"':
			quote = !quote
		default:
			v = append(v, c)
		}
	}
}

// The character classes of git's sane_ctype: ASCII only, and space is
// space, tab, LF and CR (not VT or FF).
func isConfigSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
func isASCIIAlpha(c byte) bool  { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isKeyChar(c byte) bool     { return isASCIIAlpha(c) || '0' <= c && c <= '9' || c == '-' }
func toLowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasInclude reports whether vars hold an include git would follow
// (include.path, includeIf.<condition>.path); any variable of either
// section counts, to be safe.
func hasInclude(vars []configVar) bool {
	for _, v := range vars {
		if strings.HasPrefix(v.Name, "include.") || strings.HasPrefix(v.Name, "includeif.") {
			return true
		}
	}
	return false
}
