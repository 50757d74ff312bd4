package nsq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
)

// Sharing acks: see "One delivery per message" in the package
// documentation.
const (
	// ackBatchMax and ackBatchDelay bound a batch of ack records: a batch
	// is written when it holds ackBatchMax ids or ackBatchDelay after its
	// first id, whichever comes first.
	ackBatchMax   = 1000
	ackBatchDelay = 5 * time.Millisecond
	// ackQueueLen bounds the ids waiting to be published; beyond it an id
	// is not shared (counted in ackBus.dropped): at worst its standby
	// copy is delivered, a duplicate, never a loss.
	ackQueueLen = 1 << 16
	// ackWriteTimeout bounds the write of one batch of records.
	ackWriteTimeout = 2 * time.Second
	// ackRetryMin and ackRetryMax bound the backoff between tries of a
	// batch no node took; ackPendingMax bounds the batches waiting.
	ackRetryMin   = 50 * time.Millisecond
	ackRetryMax   = time.Second
	ackPendingMax = 1024
	// ackChannelPrefix starts the name of every instance's channel on the
	// ack topic.
	ackChannelPrefix = "qgate-"
	// AckChannelExpiry is how long an instance's channel on the ack topic
	// may have no consumer on a node before another instance deletes it
	// there (its instance is gone: killed rather than stopped, or it would
	// have deleted the channel itself). It is short because every record is
	// copied, and written, to every channel of the topic: the channels of
	// killed instances multiply the ack topic's disk writes (a 5-minute
	// nemesis with a qgate SIGKILL every ~10 s and a 5-minute expiry left
	// ~30 of them per node). Deleting the channel of an instance that is
	// only cut off from a node costs at most duplicates: records are
	// written to two nodes, and its channel comes back when it reconnects.
	AckChannelExpiry = 30 * time.Second
	// ackSweepEvery is how often the expiry sweep looks at each node.
	ackSweepEvery = AckChannelExpiry / 6
)

// ackChannel is the channel on the ack topic of the instance id.
func ackChannel(id string) string { return ackChannelPrefix + id }

// randomID returns a random instance id (16 hex digits).
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type chanKey struct{ topic, channel string }

// chanIDs is what a pool knows of the replicated messages of one topic and
// channel: the ids acked within the window, and the ids held until a time.
type chanIDs struct {
	acked *idWindow
	holds map[string]time.Time
}

// ackedIDs is, per topic and channel, the replicated message ids acked
// within the dedup window and those held until a time: by this pool's
// subscriptions, and by other instances (their ack records). Safe for
// concurrent use; callers may hold a subscription's mutex (never the
// other way round).
type ackedIDs struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	chans map[chanKey]*chanIDs
}

func newAckedIDs(ttl time.Duration, max int) *ackedIDs {
	return &ackedIDs{ttl: ttl, max: max, chans: make(map[chanKey]*chanIDs)}
}

// state reports whether id was acked on topic/channel within the window
// and, if not, until when it is held there (zero: not held).
func (a *ackedIDs) state(topic, channel, id string, now time.Time) (acked bool, heldUntil time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.chans[chanKey{topic, channel}]
	if c == nil {
		return false, time.Time{}
	}
	if c.acked.has(id, now) {
		return true, time.Time{}
	}
	return false, c.holds[id]
}

// claim is state, and when id is neither acked nor held (beyond
// precision), holds it until until, atomically: of two copies arriving at
// two subscriptions of this pool at once, one claims and the other sees
// the hold.
func (a *ackedIDs) claim(topic, channel, id string, until, now time.Time, precision time.Duration) (acked bool, heldUntil time.Time, claimed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.chanLocked(topic, channel)
	if c.acked.has(id, now) {
		return true, time.Time{}, false
	}
	if h := c.holds[id]; h.Sub(now) > precision {
		return false, h, false
	}
	if len(c.holds) >= a.max {
		return false, time.Time{}, false
	}
	c.holds[id] = until
	return false, time.Time{}, true
}

// has reports whether id was acked on topic/channel within the window.
func (a *ackedIDs) has(topic, channel, id string, now time.Time) bool {
	acked, _ := a.state(topic, channel, id, now)
	return acked
}

func (a *ackedIDs) chanLocked(topic, channel string) *chanIDs {
	k := chanKey{topic, channel}
	c := a.chans[k]
	if c == nil {
		c = &chanIDs{acked: newIDWindow(a.ttl, a.max), holds: make(map[string]time.Time)}
		a.chans[k] = c
	}
	return c
}

// add remembers ids as acked on topic/channel from now on (their holds end).
func (a *ackedIDs) add(topic, channel string, ids []string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.chanLocked(topic, channel)
	for _, id := range ids {
		c.acked.add(id, now)
		delete(c.holds, id)
	}
}

// hold records each message as held on topic/channel until its time,
// replacing an earlier hold (a time not after now ends it). Beyond max
// holds per channel new ones are not kept: a hold only ever spares a
// duplicate.
func (a *ackedIDs) hold(topic, channel string, hs []envelope.Hold, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.chanLocked(topic, channel)
	for _, h := range hs {
		switch {
		case !h.Until.After(now):
			delete(c.holds, h.ID)
		case c.acked.has(h.ID, now):
		case len(c.holds) < a.max:
			c.holds[h.ID] = h.Until
		default:
			if _, ok := c.holds[h.ID]; ok {
				c.holds[h.ID] = h.Until
			}
		}
	}
}

// evict forgets ids past the window, holds past their time, and channels
// with nothing left.
func (a *ackedIDs) evict(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, c := range a.chans {
		c.acked.evict(now)
		for id, until := range c.holds {
			if !until.After(now) {
				delete(c.holds, id)
			}
		}
		if c.acked.len() == 0 && len(c.holds) == 0 {
			delete(a.chans, k)
		}
	}
}

// ackNote is one acked (until zero) or held id waiting to be published.
type ackNote struct {
	topic, channel, id string
	until              time.Time
}

// ackBus shares acked ids between the qgate instances of a pool through
// NSQ: it publishes this pool's (AckRecord, batched, to Config.AckTopic)
// and reads everyone's on a channel of its own. A record that is lost
// costs at most a duplicate delivery: a standby copy whose id is not known
// acked is delivered, never finished.
type ackBus struct {
	p        *Pool
	topic    string
	instance string
	channel  string

	in      chan ackNote
	dropped atomic.Uint64
	stop    chan struct{} // closed by close: flush and exit
	done    sync.WaitGroup

	// idle maps node HTTP address -> ack channel -> since when it was seen
	// without a consumer (the expiry sweep's memory). Owned by sweep.
	idle map[string]map[string]time.Time
}

func (p *Pool) startAckBus() {
	b := &ackBus{
		p:        p,
		topic:    p.cfg.AckTopic,
		instance: p.cfg.InstanceID,
		channel:  ackChannel(p.cfg.InstanceID),
		in:       make(chan ackNote, ackQueueLen),
		stop:     make(chan struct{}),
		idle:     make(map[string]map[string]time.Time),
	}
	p.bus = b
	b.done.Add(2)
	go b.publishLoop()
	go b.readLoop()
}

// note queues an acked id (until zero) or a hold for the other
// instances. It never blocks.
func (b *ackBus) note(topic, channel, id string, until time.Time) {
	select {
	case b.in <- ackNote{topic, channel, id, until}:
	default:
		if b.dropped.Add(1)%1000 == 1 {
			b.p.log.Warn("nsq ack records dropped: queue full (standby copies of these messages may be delivered twice)",
				"dropped", b.dropped.Load())
		}
	}
}

// close flushes what is queued (bounded), stops reading, and deletes this
// instance's channel on every node. It runs before the pool closes.
func (b *ackBus) close() {
	close(b.stop)
	b.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*b.p.cfg.Check.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, nc := range b.p.consumeTargets() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.p.nsqdPost(ctx, nc.HTTPAddr, "/channel/delete", b.topic, b.channel); err != nil {
				b.p.log.Warn("nsq ack channel not deleted", "node", nc.Name, "channel", b.channel, "err", err)
			}
		}()
	}
	wg.Wait()
}

// publishLoop batches queued ids into records and writes them.
func (b *ackBus) publishLoop() {
	defer b.done.Done()
	batch := make(map[chanKey]*envelope.AckRecord)
	n := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	add := func(a ackNote) {
		k := chanKey{a.topic, a.channel}
		r := batch[k]
		if r == nil {
			r = &envelope.AckRecord{Instance: b.instance, Topic: a.topic, Channel: a.channel}
			batch[k] = r
		}
		if a.until.IsZero() {
			r.IDs = append(r.IDs, a.id)
		} else {
			r.Held = append(r.Held, envelope.Hold{ID: a.id, Until: a.until})
		}
		n++
	}
	// pending holds written-out batches not yet acknowledged by a node:
	// while no node takes them (every node out, under load) they are
	// retried with backoff, for at most ackRetryFor, so that a short outage
	// of the data path does not turn every standby into a duplicate.
	type pendingBatch struct {
		bodies [][]byte
		at     time.Time
	}
	var pending []pendingBatch
	backoff := ackRetryMin
	retryFor := min(max(2*b.p.cfg.StandbyDelay, 10*time.Second), time.Minute)
	flush := func() {
		now := time.Now()
		if n > 0 {
			bodies := make([][]byte, 0, len(batch))
			for _, r := range batch {
				bodies = append(bodies, envelope.AppendAckRecord(nil, r))
			}
			clear(batch)
			n = 0
			if len(pending) >= ackPendingMax {
				pending = pending[1:]
				b.p.log.Warn("nsq ack records dropped: too many batches waiting (standby copies of these messages may be delivered twice)")
			}
			pending = append(pending, pendingBatch{bodies, now})
		}
		for len(pending) > 0 {
			pb := pending[0]
			if now.Sub(pb.at) > retryFor {
				b.p.log.Warn("nsq ack records not written in time (standby copies of these messages may be delivered twice)",
					"age", now.Sub(pb.at).Round(time.Millisecond))
				pending = pending[1:]
				continue
			}
			ctx, cancel := context.WithTimeout(b.p.ctx, ackWriteTimeout)
			err := b.write(ctx, pb.bodies)
			cancel()
			if err != nil {
				if b.p.ctx.Err() != nil {
					return
				}
				b.p.log.Debug("nsq ack records not written; retrying", "err", err, "in", backoff)
				timer.Reset(backoff)
				backoff = min(2*backoff, ackRetryMax)
				return
			}
			backoff = ackRetryMin
			pending = pending[1:]
		}
	}
	for {
		select {
		case a := <-b.in:
			if n == 0 && len(pending) == 0 { // else the retry's timer runs
				timer.Reset(ackBatchDelay)
			}
			add(a)
			if n >= ackBatchMax {
				timer.Stop()
				flush()
			}
		case <-timer.C:
			flush()
		case <-b.stop:
			for {
				select {
				case a := <-b.in:
					add(a)
					continue
				default:
				}
				break
			}
			flush()
			return
		}
	}
}

// write writes a batch of records to two nodes at once (one when only one
// is usable): a record on a single node is lost with it, and its acks with
// it, which would deliver the standbys of those messages twice. Readers
// see it twice, which is harmless. It succeeds when one copy is written.
func (b *ackBus) write(ctx context.Context, bodies [][]byte) error {
	nodes, err := b.p.pickReplicaNodes(b.p.nextStart(), 2)
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		return fmt.Errorf("nsq: ack records: %w", backends.ErrUnavailable)
	}
	errc := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			err := b.p.attempt(ctx, n, b.topic, bodies, 0, b.p.attemptTimeout(n))
			b.p.cfg.Observer.SendAttempt(n.cfg.Name, b.topic, len(bodies), err)
			errc <- err
		}()
	}
	var errs []error
	for range nodes {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(nodes) {
		return fmt.Errorf("nsq: ack records: %w", errors.Join(errs...))
	}
	return nil
}

// readLoop reads every instance's records on this instance's channel and
// remembers their ids; it also runs the expiry sweep of the channels of
// instances that are gone.
func (b *ackBus) readLoop() {
	defer b.done.Done()
	ctx, cancel := context.WithCancel(b.p.ctx)
	defer cancel()
	go func() {
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	sub, err := b.p.Subscribe(ctx, backends.SubscribeOptions{
		Topic: b.topic, Channel: b.channel, MaxInFlight: 64, AckDeadline: 30 * time.Second,
	})
	if err != nil {
		if ctx.Err() == nil {
			b.p.log.Error("nsq ack topic not read: acks are not shared with other instances", "topic", b.topic, "err", err)
		}
		return
	}
	defer sub.Close()
	sweep := make(chan struct{})
	go func() {
		defer close(sweep)
		b.sweepLoop(ctx)
	}()
	defer func() { cancel(); <-sweep }() // also when Receive fails for another reason
	for {
		d, err := sub.Receive(ctx)
		if err != nil {
			return // ctx ended or the pool closed
		}
		rec, err := envelope.DecodeAckRecord(d.Message.Body)
		if err != nil {
			b.p.log.Warn("nsq ack record not understood; skipped", "topic", b.topic, "err", err)
		} else if rec.Instance != b.instance {
			now := time.Now()
			b.p.acked.add(rec.Topic, rec.Channel, rec.IDs, now)
			b.p.acked.hold(rec.Topic, rec.Channel, rec.Held, now)
		}
		_ = d.Acker.Ack()
	}
}

// sweepLoop deletes, every ackSweepEvery, the ack channels of other
// instances that have had no consumer on a node for AckChannelExpiry.
func (b *ackBus) sweepLoop(ctx context.Context) {
	t := time.NewTicker(ackSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, nc := range b.p.consumeTargets() {
				b.sweep(ctx, nc, now)
			}
		}
	}
}

func (b *ackBus) sweep(ctx context.Context, nc NodeConfig, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, b.p.cfg.Check.Timeout)
	defer cancel()
	u := "http://" + nc.HTTPAddr + "/stats?" + url.Values{"format": {"json"}, "topic": {b.topic},
		"include_clients": {"false"}, "include_mem": {"false"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return
	}
	resp, err := b.p.http.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var st struct {
		Topics []struct {
			TopicName string `json:"topic_name"`
			Channels  []struct {
				ChannelName string `json:"channel_name"`
				ClientCount int    `json:"client_count"`
			} `json:"channels"`
		} `json:"topics"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&st) != nil {
		return
	}
	idle := b.idle[nc.HTTPAddr]
	if idle == nil {
		idle = make(map[string]time.Time)
		b.idle[nc.HTTPAddr] = idle
	}
	seen := make(map[string]bool)
	for _, t := range st.Topics {
		if t.TopicName != b.topic {
			continue
		}
		for _, c := range t.Channels {
			name := c.ChannelName
			if name == b.channel || !strings.HasPrefix(name, ackChannelPrefix) || c.ClientCount > 0 {
				continue
			}
			seen[name] = true
			since, ok := idle[name]
			if !ok {
				idle[name] = now
				continue
			}
			if now.Sub(since) >= AckChannelExpiry {
				if err := b.p.nsqdPost(ctx, nc.HTTPAddr, "/channel/delete", b.topic, name); err == nil {
					b.p.log.Info("nsq ack channel of a gone instance deleted", "node", nc.Name, "channel", name)
				}
				delete(idle, name)
			}
		}
	}
	for name := range idle {
		if !seen[name] {
			delete(idle, name)
		}
	}
}

// nsqdPost posts to nsqd's HTTP API at httpAddr (path with topic and
// channel), bounded by ctx.
func (p *Pool) nsqdPost(ctx context.Context, httpAddr, path, topic, channel string) error {
	u := "http://" + httpAddr + path + "?" + url.Values{"topic": {topic}, "channel": {channel}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return &nsqdStatusError{url: u, status: resp.Status, code: resp.StatusCode}
	}
	return nil
}

// nsqdStatusError is an answer of nsqd's HTTP API other than 200 OK.
type nsqdStatusError struct {
	url, status string
	code        int
}

func (e *nsqdStatusError) Error() string { return e.url + ": " + e.status }
