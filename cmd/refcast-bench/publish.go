package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/refcast/refcast/wire"
)

// target knows one server's endpoints: where subscribers connect and how
// an event is published.
type target interface {
	// subscribePath returns the request path around the repo name.
	subscribePath(cursor string) (prefix, suffix string)
	repoFmt() string
	// publish sends one event for repo; sent is the time stamped into it.
	publish(ctx context.Context, c *http.Client, repo string, run, seq int, sent time.Time) error
}

// benchOld and the per-sequence new id make every update a valid change.
const benchOld = "1111111111111111111111111111111111111111"

func benchNew(seq int) string {
	s := strconv.FormatInt(int64(seq)+1, 16)
	return "2222222222222222222222222222222222222222"[:40-len(s)] + s
}

// refcastTarget is a refcast node: /v1/events with every feature a real
// client uses — an exact repo filter, ref patterns with an exclusion, and
// (when a cursor is given) a resume with since=.
type refcastTarget struct {
	base  string // http://127.0.0.1:port
	token string
}

func (t *refcastTarget) subscribePath(cursor string) (string, string) {
	q := url.Values{wire.ParamRef: {"refs/heads/*", "^refs/heads/skip/*"}}
	if cursor != "" {
		q.Set(wire.ParamSince, cursor)
	}
	return wire.PathEvents + "?" + wire.ParamRepo + "=", "&" + q.Encode()
}

func (t *refcastTarget) repoFmt() string { return "bench/r%04d" }

func (t *refcastTarget) publish(ctx context.Context, c *http.Client, repo string, run, seq int, sent time.Time) error {
	body, _ := json.Marshal(map[string]any{
		"id": pushID(run, seq, sent), "repo": repo, "time": sent.UTC().Format(time.RFC3339Nano), "source": "api",
		"updates": []map[string]string{{"ref": "refs/heads/main", "old": benchOld, "new": benchNew(seq)}},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+wire.PathPublish, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(wire.HeaderAuthorization, wire.Bearer(t.token))
	return do(c, req)
}

// nchanTarget is nginx with nchan: one channel per repo, the same event
// JSON as refcast would send as the message body.
type nchanTarget struct {
	base string
}

func (t *nchanTarget) subscribePath(string) (string, string) { return "/sub?id=", "" }

func (t *nchanTarget) repoFmt() string { return "bench-r%04d" }

func (t *nchanTarget) publish(ctx context.Context, c *http.Client, repo string, run, seq int, sent time.Time) error {
	body, _ := json.Marshal(map[string]any{
		"v": 1, "repo": repo, "ref": "refs/heads/main", "old": benchOld, "new": benchNew(seq), "kind": "update",
		"push": pushID(run, seq, sent), "time": sent.UTC().Format(time.RFC3339Nano), "source": "api",
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/pub?id="+url.QueryEscape(repo), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return do(c, req)
}

func do(c *http.Client, req *http.Request) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("publish: %s", resp.Status)
	}
	return nil
}

// newPublishClient is a keep-alive client dialing from 127.0.0.1.
func newPublishClient(conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
		},
	}
}
