package hook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/refcast/refcast/bus"
)

func TestHTTPPublisherStatuses(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	const token = "s3cret-token"
	cases := []struct {
		status    int32
		retryable bool
		is        error
	}{
		{200, false, nil},
		{400, false, bus.ErrInvalid},
		{413, false, bus.ErrInvalid},
		{401, true, ErrUnauthorized},
		{403, true, ErrUnauthorized},
		{503, true, nil},
		{500, true, nil},
	}
	for _, tc := range cases {
		n.status.Store(tc.status)
		p := testPush(int(tc.status))
		err := (&HTTPPublisher{URL: n.URL + "/", Token: token}).Publish(context.Background(), p)
		if tc.status == 200 {
			if err != nil {
				t.Fatalf("200: %v", err)
			}
			continue
		}
		if err == nil || Retryable(err) != tc.retryable || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%d: err %v, retryable %v", tc.status, err, Retryable(err))
		}
		if strings.Contains(err.Error(), token) {
			t.Errorf("%d: error leaks the token: %v", tc.status, err)
		}
	}
	if n.auth[0] != "Bearer "+token {
		t.Fatalf("Authorization = %q", n.auth[0])
	}
}

func TestHTTPPublisherDownAndRedacted(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := strings.Replace(srv.URL, "http://", "http://user:pa55word@", 1)
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := (&HTTPPublisher{URL: url, Token: "tok"}).Publish(ctx, testPush(1))
	if err == nil || !Retryable(err) || strings.Contains(err.Error(), "pa55word") || strings.Contains(err.Error(), "tok\"") {
		t.Fatalf("err = %v", err)
	}
	if err := (&HTTPPublisher{URL: "ftp://x"}).Publish(ctx, testPush(1)); err == nil || !Retryable(err) {
		t.Fatalf("bad URL: %v (must be retryable: the push is fine)", err)
	}
}

func TestDeliverSpoolsThenFlushesOnce(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.status.Store(503)
	sp, _ := OpenSpool(t.TempDir(), nil)
	pub := &HTTPPublisher{URL: n.URL, Token: "t"}
	d, err := Deliver(context.Background(), pub, sp, []*bus.Push{testPush(1)}, time.Second, nil)
	if err != nil || d.Published != 0 || len(d.Spooled) != 1 || !Retryable(d.Err) {
		t.Fatalf("down: %+v, %v", d, err)
	}
	// Still down for the next push: it is spooled behind the first.
	d, _ = Deliver(context.Background(), pub, sp, []*bus.Push{testPush(2)}, time.Second, nil)
	if len(d.Spooled) != 1 {
		t.Fatalf("second: %+v", d)
	}
	n.status.Store(200)
	// The next push flushes the spool first, in order, then publishes.
	d, err = Deliver(context.Background(), pub, sp, []*bus.Push{testPush(3)}, time.Second, nil)
	if err != nil || d.Err != nil || d.Flushed.Published != 2 || d.Published != 1 {
		t.Fatalf("up: %+v, %v", d, err)
	}
	got := n.got()
	if len(got) != 3 || got[0].ID != testPush(1).ID || got[2].ID != testPush(3).ID {
		t.Fatalf("node got %v", got)
	}
	// Flushing again sends nothing.
	res, err := sp.Flush(context.Background(), pub)
	if err != nil || res.Published != 0 || len(n.got()) != 3 {
		t.Fatalf("re-flush: %+v %v", res, err)
	}
}

func TestDeliverRejectedNotSpooled(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.status.Store(400)
	sp, _ := OpenSpool(t.TempDir(), nil)
	d, err := Deliver(context.Background(), &HTTPPublisher{URL: n.URL}, sp, []*bus.Push{testPush(1)}, time.Second, nil)
	if err != nil || len(d.Spooled) != 0 || !errors.Is(d.Err, bus.ErrInvalid) {
		t.Fatalf("%+v, %v", d, err)
	}
	n.status.Store(401)
	d, _ = Deliver(context.Background(), &HTTPPublisher{URL: n.URL}, sp, []*bus.Push{testPush(2)}, time.Second, nil)
	if len(d.Spooled) != 1 || !errors.Is(d.Err, ErrUnauthorized) {
		t.Fatalf("401: %+v", d)
	}
}

func TestBuildPushesSplits(t *testing.T) {
	t.Parallel()
	ups := make([]bus.RefUpdate, bus.MaxUpdatesPerPush+5)
	for i := range ups {
		ups[i] = bus.RefUpdate{Ref: "refs/tags/t" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + strconv.Itoa(i), Old: z1, New: idA}
	}
	ps := BuildPushes("p-1", "acme/app", "", SourcePostReceive, time.Now(), ups)
	if len(ps) != 2 || ps[0].ID != "p-1-1" || ps[1].ID != "p-1-2" || len(ps[1].Updates) != 5 {
		t.Fatalf("split wrong: %d pushes", len(ps))
	}
	for _, p := range ps {
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if id := NewPushID(time.Now()); bus.ValidatePushID(id) != nil || id == NewPushID(time.Now()) {
		t.Fatalf("push id %q", id)
	}
}
