// Channel creation through nsqd's HTTP API: once per node and channel for
// any number of subscriptions, and retried when an attempt times out.

package nsq

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// channelCreateAttempts is how many times a channel create is tried before
// the subscription goes on without it (its SUB creates the channel too,
// only without an answer to wait for). Each attempt is bounded by the
// check timeout; under load a single one timed out for 16-42 of every
// 500-1,000 subscriptions opened (issue 12).
const channelCreateAttempts = 3

// channelCreateBackoff is the pause before the second attempt; it doubles
// for each later one.
const channelCreateBackoff = 50 * time.Millisecond

// channelKey names a channel on one node (by its TCP address, which the
// consumer's connection loss reports).
type channelKey struct{ node, topic, channel string }

// channelCreates remembers the channels the pool has created on each node,
// so that the thousandth subscription of a channel makes no call, and lets
// subscriptions opening together share one call per node and channel.
type channelCreates struct {
	mu      sync.Mutex
	created map[channelKey]bool
	calls   map[channelKey]*createCall
}

// createCall is a create in progress; done is closed when err is set.
// abandoned says the caller that made it gave up (its context ended), so
// its error says nothing about the channel.
type createCall struct {
	done      chan struct{}
	err       error
	abandoned bool
}

func newChannelCreates() *channelCreates {
	return &channelCreates{created: make(map[channelKey]bool), calls: make(map[channelKey]*createCall)}
}

// forgetNode forgets what was created on node: after a lost connection the
// node may have restarted without its channels (or deleted an ephemeral
// one), and the next subscription must create them again.
func (c *channelCreates) forgetNode(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.created {
		if k.node == node {
			delete(c.created, k)
		}
	}
}

// ensureChannel makes sure topic/channel exists on nc before a consumer
// subscribes there: nil if the pool created it before (and has not lost a
// connection to the node since), else the result of a create, shared with
// every caller asking for the same channel meanwhile. Ephemeral channels
// are never remembered: nsqd deletes them when their last consumer leaves.
func (p *Pool) ensureChannel(ctx context.Context, nc NodeConfig, topic, channel string) error {
	k := channelKey{nc.TCPAddr, topic, channel}
	c := p.channels
	for {
		c.mu.Lock()
		if c.created[k] {
			c.mu.Unlock()
			return nil
		}
		call := c.calls[k]
		if call == nil {
			call = &createCall{done: make(chan struct{})}
			c.calls[k] = call
			c.mu.Unlock()
			p.runCreate(ctx, k, nc.HTTPAddr, call)
			return call.err
		}
		c.mu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !call.abandoned {
			return call.err
		}
		// The caller that made it gave up; try again as this caller.
	}
}

// runCreate makes call's create and publishes its result.
func (p *Pool) runCreate(ctx context.Context, k channelKey, httpAddr string, call *createCall) {
	call.err = p.createChannelRetrying(ctx, httpAddr, k.topic, k.channel)
	call.abandoned = call.err != nil && ctx.Err() != nil
	c := p.channels
	c.mu.Lock()
	delete(c.calls, k)
	if call.err == nil && !strings.HasSuffix(k.channel, "#ephemeral") {
		c.created[k] = true
	}
	c.mu.Unlock()
	close(call.done)
}

// createChannelRetrying creates topic/channel on the nsqd at httpAddr,
// trying again after a failed attempt (a timeout on a loaded node above
// all) up to channelCreateAttempts times. nsqd's TOPIC_NOT_FOUND is final:
// there is nothing to create a channel on, and a SUB creates both.
func (p *Pool) createChannelRetrying(ctx context.Context, httpAddr, topic, channel string) error {
	backoff := channelCreateBackoff
	var err error
	for attempt := 1; ; attempt++ {
		err = p.createChannel(ctx, httpAddr, topic, channel)
		if err == nil || errors.Is(err, errTopicNotFound) || ctx.Err() != nil {
			return err
		}
		if attempt == channelCreateAttempts {
			return fmt.Errorf("nsq: channel create failed %d times: %w", attempt, err)
		}
		p.log.Debug("nsq channel create failed; trying again", "addr", httpAddr, "topic", topic,
			"channel", channel, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		backoff *= 2
	}
}

// createChannel makes one attempt at creating topic/channel on the nsqd at
// httpAddr (POST /channel/create), bounded by the check timeout.
func (p *Pool) createChannel(ctx context.Context, httpAddr, topic, channel string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Check.Timeout)
	defer cancel()
	err := p.nsqdPost(ctx, httpAddr, "/channel/create", topic, channel)
	if se := (*nsqdStatusError)(nil); errors.As(err, &se) && se.code == http.StatusNotFound {
		return fmt.Errorf("%s: %w", se.url, errTopicNotFound) // nsqd's TOPIC_NOT_FOUND
	}
	return err
}

// errTopicNotFound is nsqd's answer to a channel create on a topic it does
// not have.
var errTopicNotFound = errors.New("nsq: topic not found")
