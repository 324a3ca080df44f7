package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/bus/memory"
	"github.com/refcast/refcast/wire"
)

// FuzzPublishBody: whatever a publisher sends, decoding and validation never
// panic, and a push they accept becomes SSE frames with exactly one data
// line each, so no field of a push can inject SSE fields or events.
func FuzzPublishBody(f *testing.F) {
	a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	for _, s := range []string{
		`{"id":"p1","repo":"acme/app","time":"2026-11-25T14:00:00Z","updates":[{"ref":"refs/heads/main","old":"` + a + `","new":"` + b + `"}]}`,
		`{"id":"p2","repo":"acme/app","time":"2026-11-25T14:00:00Z","pusher":"eve\ndata: x","updates":[{"ref":"refs/heads/x","old":"` + a + `","new":"` + b + `","commit":{"subject":"s\r\nevent: reset","author":"a"}}]}`,
		`{"id":"s","repo":"acme/app","time":"2026-11-25T14:00:00Z","seed":true,"updates":[{"ref":"refs/tags/v1","new":"` + b + `"}]}`,
		`{}`, `[]`, `{"id":1}`, `{"repo":"../x"}`, `{"id":"p","repo":"a","time":"x"} {}`,
		`{"id":"p","repo":"acme/app","repo":"acme/other"}`, `{"id":"p","repo":"acme/app"}}`, `{"id":"p","repo":"acme/app"} x`,
		`{"updates":[{"commit":{"subject":"a","Subject":"b"}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodePush(body)
		if err != nil {
			return
		}
		// An accepted body is one JSON value, and stays refused with any
		// non-space byte after it or with a key repeated at its top.
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if _, err := decodePush(append(bytes.Clone(body), '}')); err == nil || !strings.Contains(err.Error(), "trailing data") {
			t.Fatalf("accepted %q with a '}' after it: %v", body, err)
		}
		if i := bytes.IndexByte(body, '{'); i >= 0 && p.ID != "" {
			dup := append(append(bytes.Clone(body[:i+1]), `"ID":"x",`...), body[i+1:]...)
			if _, err := decodePush(dup); err == nil || !strings.Contains(err.Error(), "duplicate key") {
				t.Fatalf("accepted %q with the id twice: %v", dup, err)
			}
		}
		if p.Validate() != nil {
			return
		}
		for i, ev := range p.Events() {
			ev.Partition, ev.Seq = 0, uint64(i+1)
			frame := wire.AppendEventFrame(nil, wire.EventName(&ev), wire.Cursor{Seqs: []uint64{ev.Seq}}, &ev)
			lines := strings.Split(strings.TrimSuffix(string(frame), "\n\n"), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "id: ") || !strings.HasPrefix(lines[1], "event: ") || !strings.HasPrefix(lines[2], "data: ") {
				t.Fatalf("frame is not id/event/data lines: %q", frame)
			}
			if bytes.ContainsRune(frame[:len(frame)-2], '\r') {
				t.Fatalf("frame contains CR: %q", frame)
			}
			var back map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "data: ")), &back); err != nil {
				t.Fatalf("data is not JSON: %v", err)
			}
		}
	})
}

// TestPublishAuthorizationScheme: publishing reads the Authorization
// header with the protocol's one parser, so the scheme is
// case-insensitive as it is for reads (RFC 7235); other schemes and
// malformed values are refused.
func TestPublishAuthorizationScheme(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, nil)
	cases := []struct {
		name, header string
		want         int
	}{
		{"canonical", "Bearer " + testToken, http.StatusOK},
		{"lower case", "bearer " + testToken, http.StatusOK},
		{"upper case", "BEARER " + testToken, http.StatusOK},
		{"two spaces", "Bearer  " + testToken, http.StatusOK},
		{"basic", "Basic " + testToken, http.StatusUnauthorized},
		{"no space", "Bearer" + testToken, http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(newPush("acme/app", upd(fmt.Sprintf("refs/heads/b%d", i), z, oid(i+1))))
			req, _ := http.NewRequest(http.MethodPost, n.url+wire.PathPublish, bytes.NewReader(body))
			req.Header.Set(wire.HeaderAuthorization, tc.header)
			req.Header.Set("Content-Type", "application/json")
			if st, _, resp := do(t, req); st != tc.want {
				t.Fatalf("Authorization %q: %d %s, want %d", tc.header, st, resp, tc.want)
			}
		})
	}
}

// TestPublishStrictBody: a body is one JSON object with no key twice at
// any depth and nothing but white space after it; the 400 says which.
func TestPublishStrictBody(t *testing.T) {
	t.Parallel()
	a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	upd := `{"ref":"refs/heads/main","old":"` + a + `","new":"` + b + `"}`
	obj := `{"id":"p1","repo":"acme/app","time":"2026-11-25T14:00:00Z","updates":[` + upd + `]}`
	cases := []struct {
		name, body, want string // want "" accepts
	}{
		{"plain", obj, ""},
		{"trailing white space", obj + " \r\n\t", ""},
		{"trailing brace", obj + "}", "trailing data after the JSON object at byte " + fmt.Sprint(len(obj)+1)},
		{"trailing bracket after space", obj + "  ]", "trailing data after the JSON object at byte " + fmt.Sprint(len(obj)+3)},
		{"trailing garbage", obj + "garbage", "trailing data after the JSON object"},
		{"second object", obj + obj, "trailing data after the JSON object"},
		{"duplicate repo", `{"id":"p1","repo":"acme/app","repo":"acme/other","time":"2026-11-25T14:00:00Z","updates":[` + upd + `]}`, `duplicate key "repo"`},
		{"duplicate by case", `{"id":"p1","repo":"acme/app","Repo":"acme/other","time":"2026-11-25T14:00:00Z","updates":[` + upd + `]}`, `duplicate key "Repo"`},
		{"duplicate by escape", `{"id":"p1","repo":"acme/app","re\u0070o":"acme/other","time":"2026-11-25T14:00:00Z","updates":[` + upd + `]}`, `duplicate key "repo"`},
		{"duplicate by long s", `{"id":"p1","repo":"acme/app","source":"api","\u017fource":"x","time":"2026-11-25T14:00:00Z","updates":[` + upd + `]}`, "duplicate key"},
		{"duplicate in update", `{"id":"p1","repo":"acme/app","time":"2026-11-25T14:00:00Z","updates":[{"ref":"refs/heads/main","ref":"refs/heads/x","old":"` + a + `","new":"` + b + `"}]}`, `duplicate key "ref"`},
		{"duplicate in commit", `{"id":"p1","repo":"acme/app","time":"2026-11-25T14:00:00Z","updates":[{"ref":"refs/heads/main","old":"` + a + `","new":"` + b + `","commit":{"subject":"s","subject":"t"}}]}`, `duplicate key "subject"`},
		{"same key in sibling objects", `{"id":"p1","repo":"acme/app","time":"2026-11-25T14:00:00Z","updates":[` + upd + `,{"ref":"refs/heads/x","old":"` + a + `","new":"` + b + `"}]}`, ""},
	}
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, nil)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodePush([]byte(tc.body))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			// A fresh id of the same length keeps the byte positions.
			body := strings.Replace(tc.body, `"p1"`, fmt.Sprintf(`"%02d"`, i), 1)
			st, _, resp := n.publishRaw(t, testToken, "application/json", []byte(body))
			if tc.want == "" {
				if st != http.StatusOK {
					t.Fatalf("status %d %s, want 200", st, resp)
				}
				return
			}
			if msg := apiErrorBody(t, http.StatusBadRequest, resp); st != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
				t.Fatalf("status %d %q, want 400 naming %q", st, msg, tc.want)
			}
		})
	}
}

// TestReadAuthorizationSchemeAsPublish: reads parse Authorization with the
// same parser as publishing, so the Bearer scheme is case-insensitive on
// /v1/refs too, and another scheme is no credential.
func TestReadAuthorizationSchemeAsPublish(t *testing.T) {
	t.Parallel()
	ga := globAuth{tokens: map[string][]string{"rtok": {"acme/*"}}}
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, func(o *Options) { o.Auth = ga })
	for _, tc := range []struct {
		header string
		want   int
	}{
		{"Bearer rtok", http.StatusOK},
		{"bearer rtok", http.StatusOK},
		{"BEARER rtok", http.StatusOK},
		{"Basic rtok", http.StatusForbidden}, // no credential: acme/app is not public
	} {
		if st, _, body := n.get(t, wire.PathRefs+"?repo=acme/app", map[string]string{wire.HeaderAuthorization: tc.header}); st != tc.want {
			t.Errorf("Authorization %q: %d %s, want %d", tc.header, st, body, tc.want)
		}
	}
}

// TestPublishGitState: the answer to a push with head says whether the
// repo's state can answer git clients, so the hook knows to seed it once;
// a push without head or a seed is not asked about.
func TestPublishGitState(t *testing.T) {
	t.Parallel()
	n := startNode(t, newBus(t, memory.Options{}), 50*time.Millisecond, nil)
	publish := func(p any) wire.Published {
		t.Helper()
		body, _ := json.Marshal(p)
		req, _ := http.NewRequest(http.MethodPost, n.url+wire.PathPublish, bytes.NewReader(body))
		req.Header.Set(wire.HeaderAuthorization, "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		st, _, resp := do(t, req)
		var out wire.Published
		if st != http.StatusOK || json.Unmarshal(resp, &out) != nil {
			t.Fatalf("publish: %d %s", st, resp)
		}
		return out
	}
	p := newPush("acme/app", upd("refs/heads/main", z, oid(1)))
	if got := publish(p); got.GitState != "" {
		t.Errorf("push without head: git_state %q, want none", got.GitState)
	}
	p = newPush("acme/app", upd("refs/heads/main", oid(1), oid(2)))
	p.Head = "refs/heads/main"
	if got := publish(p); got.GitState != wire.GitStateIncomplete {
		t.Errorf("push with head on a state never seeded: git_state %q, want %q", got.GitState, wire.GitStateIncomplete)
	}
	seed := newPush("acme/app", upd("refs/heads/main", z, oid(2)))
	seed.Seed, seed.Head = true, "refs/heads/main"
	if got := publish(seed); got.GitState != "" {
		t.Errorf("seed: git_state %q, want none", got.GitState)
	}
	p = newPush("acme/app", upd("refs/heads/main", oid(2), oid(3)))
	p.Head = "refs/heads/main"
	if got := publish(p); got.GitState != "" {
		t.Errorf("push with head after a seed: git_state %q, want none (complete)", got.GitState)
	}
}

// BenchmarkDecodePush: decoding and checking a hook's push body, the part
// of a publish's CPU spent before the bus (a 3-ref push with commits, as
// the hook sends, and refcast-bench's 1-ref push).
func BenchmarkDecodePush(b *testing.B) {
	a, c := strings.Repeat("a", 40), strings.Repeat("c", 40)
	upd := func(ref string) string {
		return `{"ref":"` + ref + `","old":"` + a + `","new":"` + c + `","commit":{"subject":"Fix the flaky test in the scheduler","author":"Ada Lovelace","time":"2026-11-25T13:59:00Z"}}`
	}
	for _, bc := range []struct{ name, body string }{
		{"hook", `{"id":"a1b2c3d4-push","repo":"acme/app","time":"2026-11-25T14:00:00Z","pusher":"ada","source":"hook","updates":[` + upd("refs/heads/main") + `,` + upd("refs/heads/dev") + `,` + upd("refs/tags/v1.2.3") + `]}`},
		{"bench", `{"id":"r1-0000001","repo":"bench/r0001","time":"2026-11-25T14:00:00Z","source":"api","updates":[{"ref":"refs/heads/main","old":"` + a + `","new":"` + c + `"}]}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			if _, err := decodePush(body); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := decodePush(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzDuplicateKeys: the byte scanner finds a duplicate key exactly where
// the walk over json.Decoder.Token it replaced did, and names the same
// key, on any valid JSON.
func FuzzDuplicateKeys(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"A":2}`, `{"a":{"a":1},"b":[{"a":1,"a":2}]}`, `{"re\u0070o":1,"repo":2}`,
		`{"\u017fource":1,"source":2}`, `{"k":1,"\u212a":2}`, `[{"x":"\"}","x":1}]`,
		`{"a":"b\\","c":{"d":[1,2,{"e":null}]},"f":true}`, `"s"`, `123`,
		`{"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":10,"11":11,"12":12,"13":13,"14":14,"15":15,"16":16,"17":17,"18":18,"5":0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		got, want := checkDuplicateKeys(body), duplicateKeysByTokens(body)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%q: scanner says %v, tokens say %v", body, got, want)
		}
	})
}

// duplicateKeysByTokens is checkDuplicateKeys as it was written first,
// over json.Decoder.Token: the reference FuzzDuplicateKeys holds the
// scanner to.
func duplicateKeysByTokens(body []byte) error {
	type frame struct {
		keys    map[string]struct{} // nil for an array
		wantKey bool
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF: body is valid JSON
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			top := &stack[n-1]
			if top.wantKey {
				k, _ := tok.(string)
				f := foldKey(k)
				if _, dup := top.keys[f]; dup {
					return fmt.Errorf("duplicate key %q", bus.Clip(k, 40))
				}
				top.keys[f] = struct{}{}
				top.wantKey = false
				continue
			}
			top.wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]struct{}{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		}
	}
}
