// The go-nsq Consumers of a subscription: connect rounds, channel creation,
// one Consumer per node and connection, its loss and its stopping.

package nsq

import (
	"errors"
	"strings"
	"sync"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
)

// connectRound connects the consumer to every node not known to be down,
// one goroutine per node that is not already connecting. The returned
// channel is closed when this round's connects have finished.
func (s *subscription) connectRound() <-chan struct{} {
	targets := s.p.consumeTargets()
	var round sync.WaitGroup
	launched := 0
	s.mu.Lock()
	if !s.closed {
		for _, nc := range targets {
			addr := nc.TCPAddr
			if s.connecting[addr] {
				continue
			}
			if c := s.consumers[addr]; c != nil && c.Stats().Connections > 0 {
				continue // connected (go-nsq reconnects a lost one itself too)
			}
			s.connecting[addr] = true
			launched++
			round.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer round.Done()
				s.connect(nc)
			}()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	if launched == 0 {
		close(done)
		return done
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		round.Wait()
		close(done)
	}()
	return done
}

// connect connects addr's consumer, making it first if needed;
// ErrAlreadyConnected is success.
//
// go-nsq's ConnectToNSQD returns once SUB is written, not when nsqd has
// processed it, so a message published right after Subscribe returns could
// reach the topic before the channel exists, and the channel would never
// see it. Creating the channel first through nsqd's HTTP API, which answers
// once it exists, closes that gap.
func (s *subscription) connect(nc NodeConfig) {
	addr := nc.TCPAddr
	c, err := s.consumerOf(addr)
	if err == nil && c.Stats().Connections > 0 {
		err = gonsq.ErrAlreadyConnected // connected, or a lost connection not yet cleaned up
	} else if err == nil {
		cerr := s.p.ensureChannel(s.ctx, nc, s.opts.Topic, s.opts.Channel)
		switch {
		case cerr == nil, s.ctx.Err() != nil:
		case errors.Is(cerr, errTopicNotFound):
			// Nothing was sent to the topic on this node yet; SUB creates
			// topic and channel, and a topic keeps its messages until its
			// first channel exists, so nothing is missed.
			s.log.Debug("nsq channel create: no topic yet", "node", nc.Name)
		default:
			// Every attempt failed. Worth a Warn: until SUB lands, messages
			// sent to the topic on this node are not this channel's (nsqd
			// gives a new channel only what comes after). s.log carries
			// topic and channel.
			s.log.Warn("nsq channel create failed", "node", nc.Name, "addr", nc.HTTPAddr, "err", cerr)
		}
		err = c.ConnectToNSQD(addr)
		if err == nil && !s.current(addr, c) {
			// The consumer was retired while connecting (its previous
			// connection's close was reported meanwhile): stopped, it would
			// never send CLS on this connection. Close it; the next round
			// connects a new consumer.
			_ = c.DisconnectFromNSQD(addr)
		}
	}
	s.mu.Lock()
	delete(s.connecting, addr)
	s.mu.Unlock()
	switch {
	case err == nil:
		s.log.Debug("nsq consumer connected", "addr", addr)
	case errors.Is(err, gonsq.ErrAlreadyConnected):
	default:
		s.log.Debug("nsq consumer connect failed", "addr", addr, "err", err)
	}
}

// consumeTargets returns every node that is not known to be down:
// primaries, backups and drained nodes alike.
func (p *Pool) consumeTargets() []NodeConfig {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]NodeConfig, 0, len(p.nodes))
	for _, g := range p.groups {
		for _, m := range g.members {
			if !m.removed && m.health != backends.NodeDown {
				out = append(out, m.cfg)
			}
		}
	}
	return out
}

// consumerOf returns addr's consumer, making it if needed.
//
// A consumer lives for one connection, like the pool's producers: when its
// connection closes it is stopped (see consumerLogger) and the next connect
// round makes a new one. A go-nsq Consumer whose connection to a directly
// configured nsqd closes starts a re-dial goroutine of its own, which
// nobody can wait for and which, when it connects while the consumer is
// being stopped, adds a connection that never got CLS: that consumer never
// stops (Close waited for it in vain, and its goroutines and connection
// leaked, still taking messages). Stopped before go-nsq decides to re-dial,
// the consumer starts no such goroutine; the pool's own connect rounds
// (kicked when a node comes Up, and every check interval) reconnect.
func (s *subscription) consumerOf(addr string) (*gonsq.Consumer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.consumers[addr]; c != nil {
		return c, nil
	}
	c, err := gonsq.NewConsumer(s.opts.Topic, s.opts.Channel, s.p.consumerConfig(s.opts.MaxInFlight, s.opts.AckDeadline))
	if err != nil {
		return nil, err
	}
	c.SetLogger(consumerLogger{nsqLogger{s.log.With("addr", addr)}, func() { s.lost(addr, c) }}, s.p.nsqLogLevel())
	// One handler goroutine: the handler never blocks for long (it only
	// queues), so more would not help.
	c.AddHandler(s)
	s.consumers[addr] = c
	return c, nil
}

// current reports whether c is addr's consumer.
func (s *subscription) current(addr string, c *gonsq.Consumer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.consumers[addr] == c
}

// lost retires addr's consumer c after its connection closed. It runs in
// go-nsq's goroutine that closes the connection, before go-nsq would start
// its re-dial goroutine: with the consumer stopped, it starts none.
//
// The connection being gone is what releases the node's deliveries (nsqd
// has requeued them; acks over the dead connection cannot land): not a
// failed health check, which says nothing of this connection.
func (s *subscription) lost(addr string, c *gonsq.Consumer) {
	c.Stop() // no connection left: the consumer stops at once
	s.p.channels.forgetNode(addr)
	s.mu.Lock()
	if s.consumers[addr] == c {
		delete(s.consumers, addr)
	}
	if !s.closed {
		s.down[addr] = true
	}
	live := s.retired[:0]
	for _, r := range s.retired {
		select {
		case <-r.StopChan:
		default:
			live = append(live, r)
		}
	}
	s.retired = append(live, c)
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		wake(s.kick) // reconnect if the node is still up
	}
}

// disconnect stops consuming from addr (a node that left the pool) and
// waits for the consumer to stop, bounded.
func (s *subscription) disconnect(addr string) {
	s.mu.Lock()
	c := s.consumers[addr]
	delete(s.consumers, addr)
	s.mu.Unlock()
	if c != nil {
		s.stopConsumers([]*gonsq.Consumer{c}, nil)
	}
}

// stopConsumers stops cs (CLS on their connections), then runs between (if
// any), then waits for them to stop, bounded: a frozen node's connection
// ends only when its reads time out.
func (s *subscription) stopConsumers(cs []*gonsq.Consumer, between func()) {
	for _, c := range cs {
		c.Stop()
	}
	if between != nil {
		between()
	}
	timeout := time.NewTimer(readTimeout + 2*time.Second)
	defer timeout.Stop()
	for _, c := range cs {
		select {
		case <-c.StopChan:
		case <-timeout.C:
			s.log.Warn("nsq consumer did not stop in time")
			return
		}
	}
}

// consumerLogger is the logger of one consumer: it calls lost when go-nsq
// reports that the consumer's connection closed ("there are 0 connections
// left alive", logged at Warning before go-nsq decides whether to re-dial).
type consumerLogger struct {
	nsqLogger
	lost func()
}

// Output implements go-nsq's logger interface.
func (l consumerLogger) Output(depth int, s string) error {
	if strings.Contains(s, "connections left alive") {
		l.lost()
	}
	return l.nsqLogger.Output(depth, s)
}
