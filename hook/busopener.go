package hook

import (
	"context"
	"errors"
	"sync"

	"github.com/refcast/refcast/bus"
)

// Bus is what a hook needs of a bus it publishes to directly: publish a
// push, answer a ping (refcast hook check), close.
type Bus interface {
	Publish(ctx context.Context, p *bus.Push) ([]bus.Event, error)
	Ping(ctx context.Context) error
	Close() error
}

// BusOpener opens the bus a Redis URL names with the given number of
// partitions (0: bus.DefaultPartitions). The command injects it (wrapping
// bus/redis) so this package never imports a bus implementation.
type BusOpener func(ctx context.Context, url string, partitions int) (Bus, error)

// lazyBusPublisher opens its bus on first use, so a hook that only flushes
// an empty spool never connects. Open failures are retryable (the push is
// spooled), whatever their cause: a wrong URL is fixed by configuration,
// not by changing the push. Safe for concurrent use (a drainer's workers
// share one).
type lazyBusPublisher struct {
	open       BusOpener // set at construction
	url        string    // set at construction
	partitions int       // set at construction

	mu sync.Mutex
	b  Bus // opened by the first Publish or ping
}

var _ Publisher = (*lazyBusPublisher)(nil)

func (p *lazyBusPublisher) bus(ctx context.Context) (Bus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.b == nil {
		b, err := p.open(ctx, p.url, p.partitions)
		if err != nil {
			return nil, errors.New(err.Error()) // drop bus.ErrInvalid: the push is fine
		}
		p.b = b
	}
	return p.b, nil
}

// Publish implements Publisher.
func (p *lazyBusPublisher) Publish(ctx context.Context, push *bus.Push) error {
	b, err := p.bus(ctx)
	if err != nil {
		return err
	}
	return BusPublisher{Bus: b}.Publish(ctx, push)
}

// GitIncomplete implements gitStateAsker through the opened bus.
func (p *lazyBusPublisher) GitIncomplete(ctx context.Context, repo string) bool {
	p.mu.Lock()
	b := p.b
	p.mu.Unlock()
	return b != nil && BusPublisher{Bus: b}.GitIncomplete(ctx, repo)
}

func (p *lazyBusPublisher) ping(ctx context.Context) error {
	b, err := p.bus(ctx)
	if err != nil {
		return err
	}
	return b.Ping(ctx)
}

func (p *lazyBusPublisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.b != nil {
		_ = p.b.Close()
		p.b = nil
	}
}

// publisher builds the configured destination, nil when none is, and the
// function that releases it. A Redis destination needs open.
func (s *Settings) publisher(open BusOpener) (Publisher, func(), error) {
	switch {
	case s.URL != "":
		return &HTTPPublisher{URL: s.URL, Token: s.Token}, func() {}, nil
	case s.Redis != "":
		if open == nil {
			return nil, func() {}, usagef("hook: a Redis destination is configured but this build cannot open one")
		}
		p := &lazyBusPublisher{open: open, url: s.Redis, partitions: s.Partitions}
		return p, p.close, nil
	}
	return nil, func() {}, nil
}

// publisher is Settings.publisher, or the drainer's open one for the same
// destination: a drainer keeps each destination's connection across
// pushes (a Redis dial, HELLO and script load cost a hook ~3 ms a push).
func (r *Runner) publisher(s *Settings) (Publisher, func(), error) {
	if r.Publisher != nil {
		return r.Publisher, func() {}, nil
	}
	if r.pubs == nil {
		return s.publisher(r.OpenBus)
	}
	return r.pubs.get(s, r.OpenBus)
}

// publisherCache holds a drainer's destinations, by everything that
// tells one from another.
type publisherCache struct {
	mu     sync.Mutex
	m      map[publisherKey]Publisher
	closes []func()
}

// maxCachedPublishers bounds a drainer's open destinations; a host has a
// handful (one node URL or Redis, a token or a few), and the rest are
// opened per push.
const maxCachedPublishers = 64

type publisherKey struct {
	url, token, redis string
	partitions        int
}

func (c *publisherCache) get(s *Settings, open BusOpener) (Publisher, func(), error) {
	k := publisherKey{s.URL, s.Token, s.Redis, s.Partitions}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.m[k]; ok {
		return p, func() {}, nil
	}
	p, closeP, err := s.publisher(open)
	if err != nil || p == nil {
		return p, closeP, err
	}
	if len(c.m) >= maxCachedPublishers {
		return p, closeP, nil // kept for this push only
	}
	if c.m == nil {
		c.m = map[publisherKey]Publisher{}
	}
	c.m[k] = p
	c.closes = append(c.closes, closeP)
	return p, func() {}, nil
}

// close closes every destination; the cache is not used after.
func (c *publisherCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.closes {
		f()
	}
	c.m, c.closes = nil, nil
}
