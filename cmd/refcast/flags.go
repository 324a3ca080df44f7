package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// flagSet is the flag layer every subcommand parses through. On top of
// package flag it gives each flag an environment twin, and it turns every
// parse failure into one line that names the flag, the bad value and the
// form expected (with "did you mean --X?" for a near miss of an unknown
// flag), followed by a one-line pointer to `refcast COMMAND -h`: the full
// help is printed only when asked for.
//
// Package flag reports a failure by printing its reason to the set's
// output and then calling Usage, and returns only a string. So the
// FlagSet's output is the flagSet itself, which keeps that reason until
// Usage explains it; a Usage with no reason kept is -h. This works for
// callers that run fs.Parse themselves (the hook's), not only parseFlags.
type flagSet struct {
	*flag.FlagSet
	stderr io.Writer
	// help prints the full help; set at construction, or by setHelp.
	help func(w io.Writer)
	// envNames maps a flag to its environment twin where that is not
	// envName(flag): `refcast token` shares serve's REFCAST_AUTH_* names.
	envNames map[string]string

	// Owned by the goroutine parsing; both are cleared by usage.
	reason bytes.Buffer // what package flag printed about its failure
	bad    *valueError  // the failed Set behind that failure, if any
}

// newFlagSet returns the flags of a subcommand: errors come back to the
// caller (exit 2) after a short explanation on stderr, help (-h) goes to
// stderr in full. synopsis follows "Usage: refcast ".
func newFlagSet(name, synopsis string, env Env) *flagSet {
	s := explainFlagErrors(flag.NewFlagSet(name, flag.ContinueOnError), env, "")
	s.help = func(w io.Writer) {
		fmt.Fprintf(w, "Usage: refcast %s\n\nFlags (each also read from the environment variable shown):\n", synopsis)
		s.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(w, "  --%s (%s)\n    \t%s", f.Name, s.twin(f.Name), f.Usage)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
	}
	return s
}

// explainFlagErrors puts a FlagSet made elsewhere on the layer, with help
// as its full help text (empty: keep the one it has). Flags defined on fs
// later are checked too when parseFlags runs; a caller that runs fs.Parse
// itself must define them first. Calling it again only changes the help.
func explainFlagErrors(fs *flag.FlagSet, env Env, help string) *flagSet {
	s, ok := fs.Output().(*flagSet)
	if !ok {
		s = &flagSet{FlagSet: fs, stderr: env.Stderr}
		fs.SetOutput(s)
		fs.Usage = s.usage
	}
	if help != "" {
		s.setHelp(help)
	}
	s.checkValues()
	return s
}

// setHelp makes text the full help printed by -h.
func (s *flagSet) setHelp(text string) {
	s.help = func(w io.Writer) { fmt.Fprint(w, text) }
}

// Write keeps what package flag prints: the reason of a failure, which
// usage, called right after, explains.
func (s *flagSet) Write(p []byte) (int, error) { return s.reason.Write(p) }

// usage is package flag's Usage: the full help for -h, else a short
// explanation of the failure just kept.
func (s *flagSet) usage() {
	reason, bad := strings.TrimSpace(s.reason.String()), s.bad
	s.reason.Reset()
	s.bad = nil
	if reason == "" {
		if s.help != nil {
			s.help(s.stderr)
		}
		return
	}
	fmt.Fprintf(s.stderr, "refcast: %s\n%s\n", s.explain(reason, bad), s.pointer())
}

// pointer is the line that replaces the full help after an error.
func (s *flagSet) pointer() string {
	return fmt.Sprintf("Run 'refcast %s -h' for its flags.", s.Name())
}

// explain rewrites package flag's reason (its wording is part of Go's
// compatibility promise in practice; an unknown one is shown as it is).
func (s *flagSet) explain(reason string, bad *valueError) string {
	if bad != nil {
		return "--" + bad.flag + ": " + bad.Error()
	}
	if name, ok := strings.CutPrefix(reason, "flag provided but not defined: -"); ok {
		msg := fmt.Sprintf("%s: unknown flag --%s", s.Name(), name)
		if near := nearestFlag(s.FlagSet, name); near != "" {
			msg += fmt.Sprintf("; did you mean --%s?", near)
		}
		return msg
	}
	if name, ok := strings.CutPrefix(reason, "flag needs an argument: -"); ok {
		if f := s.Lookup(name); f != nil {
			return fmt.Sprintf("--%s needs a value; %s", name, formOf(f))
		}
	}
	if arg, ok := strings.CutPrefix(reason, "bad flag syntax: "); ok {
		return fmt.Sprintf("%q is not a flag; write --name or --name=value", arg)
	}
	return reason
}

// twin is the environment variable a flag is also read from.
func (s *flagSet) twin(flagName string) string {
	if n, ok := s.envNames[flagName]; ok {
		return n
	}
	return envName(flagName)
}

// envName is a flag's environment twin: --auth-secret-file is
// REFCAST_AUTH_SECRET_FILE.
func envName(flagName string) string {
	return "REFCAST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command
// line from its environment twin. Repeatable flags take a comma-separated
// list from the environment. -h prints help and succeeds (exitError 0); a
// bad flag has been explained on stderr when it returns exitError 2; a bad
// environment value comes back as a usageError naming the variable.
func parseFlags(fs *flagSet, args []string, env Env) error {
	fs.checkValues()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{code: 0}
		}
		return exitError{code: 2} // usage explained it
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		twin := fs.twin(f.Name)
		v := env.Getenv(twin)
		if set[f.Name] || err != nil || v == "" {
			return
		}
		vals := []string{v}
		if _, ok := unwrapValue(f.Value).(interface{ repeatable() }); ok {
			vals = strings.Split(v, ",")
		}
		for _, one := range vals {
			if e := fs.Set(f.Name, strings.TrimSpace(one)); e != nil {
				fs.bad = nil // reported here, not by usage
				err = usageError{msg: fmt.Sprintf("%s (--%s): %v\n%s", twin, f.Name, e, fs.pointer())}
				return
			}
		}
	})
	return err
}

// parseInterspersed parses flags that may follow positional arguments
// (refcast watch URL --repo R), then fills unset flags from the
// environment as parseFlags does. It returns the positional arguments;
// everything after "--" is positional.
func parseInterspersed(fs *flagSet, args []string, env Env) ([]string, error) {
	fs.checkValues()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitError{code: 0}
			}
			return nil, exitError{code: 2} // usage explained it
		}
		if fs.NArg() == 0 {
			break
		}
		if i := len(args) - fs.NArg() - 1; i >= 0 && args[i] == "--" {
			pos = append(pos, fs.Args()...)
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if err := parseFlags(fs, nil, env); err != nil {
		return nil, err
	}
	return pos, nil
}

// checkValues wraps every flag's value so a failed Set says what form was
// expected. It is idempotent.
func (s *flagSet) checkValues() {
	s.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(*checkedValue); !ok {
			f.Value = &checkedValue{Value: f.Value, name: f.Name, set: s}
		}
	})
}

// checkedValue is a flag's value whose Set errors are valueErrors, kept
// for usage too: package flag passes them on only as text.
type checkedValue struct {
	flag.Value
	name string
	set  *flagSet
}

func (v *checkedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err == nil {
		return nil
	}
	e := &valueError{flag: v.name, value: s, err: err}
	e.what, e.form = kindOf(v.name, v.Value)
	v.set.bad = e
	return e
}

// unwrapValue is the value checkValues wrapped, or v.
func unwrapValue(v flag.Value) flag.Value {
	if c, ok := v.(*checkedValue); ok {
		return c.Value
	}
	return v
}

// IsBoolFlag lets package flag accept a bare --json for a wrapped bool.
func (v *checkedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Get implements flag.Getter for the wrapped value, nil if it has none.
func (v *checkedValue) Get() any {
	if g, ok := v.Value.(flag.Getter); ok {
		return g.Get()
	}
	return nil
}

// valueError is a value a flag refused: what the flag wanted and how to
// write it, or, for a flag of refcast's own type, that type's reason.
type valueError struct {
	flag, value string
	what, form  string // "a duration", "use a number with a unit, ..."; empty for refcast's own types
	err         error
}

func (e *valueError) Error() string {
	if e.what == "" {
		// refcast's own values name the value in their reason.
		if msg := e.err.Error(); strings.Contains(msg, strconv.Quote(e.value)) {
			return msg
		}
		return fmt.Sprintf("%q: %v", e.value, e.err)
	}
	return fmt.Sprintf("%q is not %s; %s", e.value, e.what, e.form)
}

func (e *valueError) Unwrap() error { return e.err }

// kindOf says what a value of package flag's types must look like; empty
// for any other type, whose own error says it.
func kindOf(name string, v flag.Value) (what, form string) {
	g, ok := v.(flag.Getter)
	if !ok {
		return "", ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "a duration", "use a number with a unit, like 10s or 500ms"
	case int, int64:
		return "a whole number", "use digits, like 100"
	case uint, uint64:
		return "a whole number", "use digits without a sign, like 100"
	case float64:
		return "a number", "use digits, like 2.5"
	case bool:
		return "true or false", fmt.Sprintf("use true or false, as in --%s=false", name)
	}
	return "", ""
}

// formOf is how to write a value of f, for a flag given without one.
func formOf(f *flag.Flag) string {
	if _, form := kindOf(f.Name, f.Value); form != "" {
		return form
	}
	return f.Usage
}

// nearestFlag is the defined flag an unknown name most likely meant: the
// closest within 2 edits (fewer edits than the name has letters, so "x"
// does not suggest "ttl"), else the shortest flag the name is a prefix of
// or that is a prefix of it; "" when none is close.
func nearestFlag(fs *flag.FlagSet, name string) string {
	best, bestDist := "", 3
	fs.VisitAll(func(f *flag.Flag) { // in name order: ties go to the first
		if d := levenshtein(name, f.Name); d < bestDist && d < len([]rune(name)) {
			best, bestDist = f.Name, d
		}
	})
	if best != "" || len(name) < 2 {
		return best
	}
	fs.VisitAll(func(f *flag.Flag) {
		if (strings.HasPrefix(f.Name, name) || strings.HasPrefix(name, f.Name)) && (best == "" || len(f.Name) < len(best)) {
			best = f.Name
		}
	})
	return best
}

// levenshtein is the edit distance between a and b in runes: insertions,
// deletions, substitutions and, since "rpeo" for "repo" is the commonest
// typo, a swap of two neighbours, each one edit (Levenshtein with
// transpositions, the "optimal string alignment" variant). Flag names are
// short, so the O(len(a)·len(b)) table costs nothing.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// repeatable marks a flag whose environment twin is a comma-separated list.
func (l *listFlag) repeatable() {}
