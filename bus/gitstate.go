package bus

import (
	"fmt"
	"strings"
)

// What git needs besides the refs. A git client's ref advertisement names
// HEAD's symbolic target and, for every annotated tag, the object it peels
// to (the "^{}" lines). Both are kept in the repo's ref state as reserved
// fields, stored next to the refs by every implementation: their names
// start with a NUL byte, which ValidateRef never accepts, so they can never
// collide with a ref and sort before every ref.
const (
	// FieldHead holds HEAD's symbolic target ("refs/heads/main").
	FieldHead = "\x00head"
	// FieldComplete is "1" while the state's peels are known for every ref
	// (set by a seed that carries Head, cleared by a push without Head).
	FieldComplete = "\x00complete"
	// FieldPeeledPrefix, then a ref name, holds what that annotated tag
	// peels to.
	FieldPeeledPrefix = "\x00peeled:"
)

// IsGitField reports whether a state key is one of the reserved fields
// above rather than a ref.
func IsGitField(key string) bool { return strings.HasPrefix(key, "\x00") }

// GitFields returns the reserved fields a push writes into its repo's
// state, applied after its refs (and, for a seed, after the old state and
// its fields are dropped). An empty value deletes the field.
//
// The rules, so that Complete is never claimed for a state refcast cannot
// vouch for:
//   - A push that carries Head asserts that Peeled is set on each of its
//     updates whose new object is an annotated tag (the hook peels every
//     one, outside its enrichment budget). It sets HEAD and each updated
//     ref's peel, and leaves completeness as it was.
//   - A seed or a whole push with Head makes the state complete: it lists
//     every ref.
//   - A push without Head (an older hook, an API publisher) may have left
//     tags unpeeled, so it clears completeness until the next seed.
//
// Any other push leaves completeness as it was, even for a repo that had
// no state: the bus cannot tell a new repository from one whose older refs
// it never saw. The hook can (Push.Whole), by looking at the repository.
func (p *Push) GitFields() [][2]string {
	var out [][2]string
	if p.Head != "" {
		out = append(out, [2]string{FieldHead, p.Head})
	}
	switch {
	case p.ReplacesState() && p.Head != "":
		out = append(out, [2]string{FieldComplete, "1"})
	case !p.ReplacesState() && p.Head == "":
		out = append(out, [2]string{FieldComplete, ""})
	}
	for _, u := range p.Updates {
		if p.ReplacesState() && u.Peeled == "" {
			continue // the old fields were dropped with the old state
		}
		peeled := u.Peeled
		if IsZeroID(u.New) {
			peeled = ""
		}
		out = append(out, [2]string{FieldPeeledPrefix + u.Ref, peeled})
	}
	return out
}

// ApplyTo applies p to a repo's state held as two maps, its refs and its
// git fields (GitFields' names), as every bus stores it: a replacing push
// starts over, each update sets or deletes its ref, each field is set or
// deleted, and a repo left with no refs has no state, fields included. It
// reports whether the state is empty afterwards.
func (p *Push) ApplyTo(refs, fields map[string]string) (empty bool) {
	if p.ReplacesState() {
		clear(refs)
		clear(fields)
	}
	for _, u := range p.Updates {
		if IsZeroID(u.New) {
			delete(refs, u.Ref)
		} else {
			refs[u.Ref] = u.New
		}
	}
	for _, f := range p.GitFields() {
		if f[1] == "" {
			delete(fields, f[0])
		} else {
			fields[f[0]] = f[1]
		}
	}
	if len(refs) == 0 {
		clear(fields)
		return true
	}
	return false
}

// SetGitFields fills st's Head, Peeled and Complete from the reserved
// fields read back from a store (fields may hold refs too; they are
// ignored).
func (st *RefState) SetGitFields(fields map[string]string) {
	st.Head = fields[FieldHead]
	st.Peeled = map[string]string{}
	for k, v := range fields {
		if ref, ok := strings.CutPrefix(k, FieldPeeledPrefix); ok {
			st.Peeled[ref] = v
		}
	}
	st.Complete = IsComplete(fields[FieldHead], fields[FieldComplete])
}

// IsComplete applies the rule of RefState.Complete to the stored values of
// FieldHead and FieldComplete, for buses that read just those two.
func IsComplete(head, complete string) bool { return head != "" && complete == "1" }

// validateHead checks Push.Head: empty (unknown) or a ref name.
func validateHead(head string) error {
	if head == "" {
		return nil
	}
	if err := ValidateRef(head); err != nil {
		return fmt.Errorf("head: %w", err)
	}
	return nil
}
