package hook

import (
	"context"
	"errors"

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
// not by changing the push. Not safe for concurrent use: one hook run
// publishes in order.
type lazyBusPublisher struct {
	open       BusOpener // set at construction
	url        string    // set at construction
	partitions int       // set at construction
	b          Bus       // opened by the first Publish or ping
}

var _ Publisher = (*lazyBusPublisher)(nil)

func (p *lazyBusPublisher) bus(ctx context.Context) (Bus, error) {
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
	return p.b != nil && BusPublisher{Bus: p.b}.GitIncomplete(ctx, repo)
}

func (p *lazyBusPublisher) ping(ctx context.Context) error {
	b, err := p.bus(ctx)
	if err != nil {
		return err
	}
	return b.Ping(ctx)
}

func (p *lazyBusPublisher) close() {
	if p.b != nil {
		_ = p.b.Close()
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
