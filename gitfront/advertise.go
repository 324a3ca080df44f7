package gitfront

import (
	"fmt"
	"slices"
	"strings"

	"github.com/refcast/refcast/bus"
)

// What refcast advertises. The fetch itself is served by the upstream's
// git upload-pack, so every capability here must be one any upstream
// honours without configuration: the v0 list git upload-pack has always
// sent, and in v2 "fetch=shallow". The ones that depend on the upstream's
// uploadpack.* settings or version are Features, advertised only when the
// operator says the upstream has them.
const (
	v0Caps     = "multi_ack thin-pack side-band side-band-64k ofs-delta shallow deepen-since deepen-not deepen-relative no-progress include-tag multi_ack_detailed no-done"
	v2Fetch    = "fetch=shallow"
	v2LsRefs   = "ls-refs=unborn"
	serviceHdr = "# service=git-upload-pack\n"
)

// Features are the capabilities an upstream's git upload-pack offers only
// when configured (or from some version on), by the name an operator gives
// (Options.Features), with what each adds to the v0 capability list and to
// v2's "fetch=" list. Advertising one the upstream lacks makes a client ask
// for it and the upstream refuse; leaving one out makes a client do
// without (`git clone --filter=blob:none` warns "filtering not recognized
// by server" and clones everything).
var Features = map[string]struct{ V0, V2 string }{
	"filter":                       {"filter", "filter"},                 // uploadpack.allowFilter
	"allow-tip-sha1-in-want":       {"allow-tip-sha1-in-want", ""},       // uploadpack.allowTipSHA1InWant
	"allow-reachable-sha1-in-want": {"allow-reachable-sha1-in-want", ""}, // uploadpack.allowReachableSHA1InWant
	"ref-in-want":                  {"", "ref-in-want"},                  // uploadpack.allowRefInWant
	"sideband-all":                 {"", "sideband-all"},                 // uploadpack.allowSidebandAll
	"wait-for-done":                {"", "wait-for-done"},                // git 2.32+
}

// caps is what a handler advertises besides the refs, fixed at New.
type caps struct {
	agent   string
	v0      string // the v0 capability list without symref= and object-format=
	v2Fetch string // "fetch=shallow ..."
}

func newCaps(agent string, features []string) (*caps, error) {
	c := &caps{agent: agent, v0: v0Caps, v2Fetch: v2Fetch}
	seen := map[string]bool{}
	for _, f := range features {
		add, ok := Features[f]
		if !ok {
			names := make([]string, 0, len(Features))
			for n := range Features {
				names = append(names, n)
			}
			slices.Sort(names)
			return nil, fmt.Errorf("unknown upstream feature %q: give some of %s", f, strings.Join(names, ", "))
		}
		if seen[f] {
			continue
		}
		seen[f] = true
		if add.V0 != "" {
			c.v0 += " " + add.V0
		}
		if add.V2 != "" {
			c.v2Fetch += " " + add.V2
		}
	}
	return c, nil
}

// ref is one advertised ref.
type ref struct{ name, id, peeled string }

// view is what one client may see of a repo's state: the refs its
// credential covers, sorted as git sorts them (byte order), and HEAD.
type view struct {
	refs   []ref
	head   string // HEAD's symbolic target, "" when hidden or unknown
	headID string // the target's id; "" when it does not exist (unborn)
	format string // "sha1" or "sha256"
}

func (v *view) zeroID() string {
	if v.format == "sha256" {
		return bus.ZeroSHA256
	}
	return bus.ZeroSHA1
}

// appendV0 appends the protocol v0 advertisement as git http-backend sends
// it for info/refs: the service line and a flush, HEAD first with the
// capabilities (a symref= for HEAD when it resolves), every ref, a "^{}"
// line after each annotated tag, a flush. An empty repo advertises the
// capabilities on a zero id named "capabilities^{}".
func (v *view) appendV0(dst []byte, c *caps) []byte {
	dst = AppendPkt(dst, serviceHdr)
	dst = append(dst, flushPkt...)
	list := c.v0
	if v.headID != "" {
		list += " symref=HEAD:" + v.head
	}
	list += " object-format=" + v.format + " agent=" + c.agent
	first := true
	line := func(id, name string) {
		if first {
			dst = AppendPkt(dst, id, " ", name, "\x00", list, "\n")
			first = false
			return
		}
		dst = AppendPkt(dst, id, " ", name, "\n")
	}
	if v.headID != "" {
		line(v.headID, "HEAD")
	}
	for _, r := range v.refs {
		line(r.id, r.name)
		if r.peeled != "" {
			line(r.peeled, r.name+"^{}")
		}
	}
	if first {
		line(v.zeroID(), "capabilities^{}")
	}
	return append(dst, flushPkt...)
}

// appendV2Caps appends the protocol v2 capability advertisement.
func appendV2Caps(dst []byte, c *caps, format string) []byte {
	for _, c := range []string{"version 2", "agent=" + c.agent, v2LsRefs, c.v2Fetch, "server-option", "object-format=" + format} {
		dst = AppendPkt(dst, c, "\n")
	}
	return append(dst, flushPkt...)
}

// lsRefsArgs are the arguments of one ls-refs command.
type lsRefsArgs struct {
	format                string // object-format= the client sent, "" when none
	symrefs, peel, unborn bool
	prefixes              []string
}

func (a *lsRefsArgs) match(name string) bool {
	if len(a.prefixes) == 0 {
		return true
	}
	for _, p := range a.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// appendLsRefs appends the answer to ls-refs as git's ls-refs.c writes it:
// HEAD first (or, when its target does not exist and the client asked for
// unborn and symrefs, "unborn HEAD"), then every matching ref with its
// peeled object when asked, then a flush.
func (v *view) appendLsRefs(dst []byte, a *lsRefsArgs) []byte {
	if v.head != "" && a.match("HEAD") {
		target := ""
		if a.symrefs {
			target = " symref-target:" + v.head
		}
		switch {
		case v.headID != "":
			dst = AppendPkt(dst, v.headID, " HEAD", target, "\n")
		case a.unborn && a.symrefs:
			dst = AppendPkt(dst, "unborn HEAD", target, "\n")
		}
	}
	for _, r := range v.refs {
		if !a.match(r.name) {
			continue
		}
		if a.peel && r.peeled != "" {
			dst = AppendPkt(dst, r.id, " ", r.name, " peeled:", r.peeled, "\n")
		} else {
			dst = AppendPkt(dst, r.id, " ", r.name, "\n")
		}
	}
	return append(dst, flushPkt...)
}
