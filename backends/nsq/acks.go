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
	// ackHeartbeat is how often an instance with nothing else to publish
	// writes an empty record: the others know it is there (peerTTL) and
	// keep measuring how far records trail their events.
	ackHeartbeat = 2 * time.Second
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
	holds map[string]holdEntry
}

// holdEntry is a message held on a channel: until when, since when the
// holder has it, and which instance holds it. Of two instances' holds the
// one that ranks first (before) is kept: two gateways that each took a
// copy at the same moment agree which one delivers.
type holdEntry struct {
	until, since time.Time
	by           string
}

// before reports whether h ranks before o: the earlier since (zero, from
// an older version's record, first), then the smaller instance id.
func (h holdEntry) before(o holdEntry) bool {
	if !h.since.Equal(o.since) {
		return h.since.Before(o.since)
	}
	return h.by < o.by
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

// recent returns, per topic and channel, the ids acked at or after t.
func (a *ackedIDs) recent(t time.Time) map[chanKey][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[chanKey][]string)
	for k, c := range a.chans {
		if ids := c.acked.since(t); len(ids) > 0 {
			out[k] = ids
		}
	}
	return out
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
	return false, c.holds[id].until
}

// claim is state, and when id is neither acked nor held (beyond
// precision), holds it for instance by from now until until, atomically:
// of two copies arriving at two subscriptions of this pool at once, one
// claims and the other sees the hold. (Between instances, see owns.)
func (a *ackedIDs) claim(topic, channel, id, by string, until, now time.Time, precision time.Duration) (acked bool, heldUntil time.Time, claimed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.chanLocked(topic, channel)
	if c.acked.has(id, now) {
		return true, time.Time{}, false
	}
	if h := c.holds[id].until; h.Sub(now) > precision {
		return false, h, false
	}
	if len(c.holds) >= a.max {
		return false, time.Time{}, false
	}
	c.holds[id] = holdEntry{until: until, since: now, by: by}
	return false, time.Time{}, true
}

// owns reports, for a message instance by claimed, whether it was acked
// meanwhile, or whether the claim stands: no other instance's hold that
// ranks before it (an earlier claim made at another gateway) has arrived;
// if one has, until is when that hold ends.
func (a *ackedIDs) owns(topic, channel, id, by string, now time.Time) (acked, won bool, until time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.chans[chanKey{topic, channel}]
	if c == nil {
		return false, true, time.Time{}
	}
	if c.acked.has(id, now) {
		return true, false, time.Time{}
	}
	e, ok := c.holds[id]
	if !ok || !e.until.After(now) || e.by == by {
		return false, true, time.Time{}
	}
	return false, false, e.until
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
		c = &chanIDs{acked: newIDWindow(a.ttl, a.max), holds: make(map[string]holdEntry)}
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

// hold records each message as held on topic/channel by instance by until
// its time. A time not after now ends by's own hold (never another
// instance's); a hold by the same instance is moved to the new time; of
// two instances' holds the one that ranks first is kept. Beyond max holds
// per channel new ones are not kept: a hold only ever spares a duplicate.
func (a *ackedIDs) hold(topic, channel, by string, hs []envelope.Hold, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.chanLocked(topic, channel)
	for _, h := range hs {
		e, ok := c.holds[h.ID]
		if ok && !e.until.After(now) {
			delete(c.holds, h.ID) // past: as if absent
			ok = false
		}
		n := holdEntry{until: h.Until, since: h.Since, by: by}
		switch {
		case !h.Until.After(now):
			if ok && e.by == by {
				delete(c.holds, h.ID)
			}
		case c.acked.has(h.ID, now):
		case !ok:
			if len(c.holds) < a.max {
				c.holds[h.ID] = n
			}
		case e.by == by:
			e.until = h.Until
			if n.since.Before(e.since) {
				e.since = n.since
			}
			c.holds[h.ID] = e
		case n.before(e):
			c.holds[h.ID] = n
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
		for id, h := range c.holds {
			if !h.until.After(now) {
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
	until, since       time.Time
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
func (b *ackBus) note(topic, channel, id string, until, since time.Time) {
	select {
	case b.in <- ackNote{topic, channel, id, until, since}:
	default:
		if b.dropped.Add(1)%1000 == 1 {
			b.p.log.Warn("nsq ack records dropped: queue full (standby copies of these messages may be delivered twice)",
				"dropped", b.dropped.Load())
		}
	}
}

// close flushes what is queued (bounded), stops reading, hands over what
// this instance knows, and deletes its channel on every node. It runs
// before the pool closes.
func (b *ackBus) close() {
	close(b.stop)
	b.done.Wait()
	b.handover()
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

// handover writes again every id this instance knows acked within the
// last two standby delays, as records of its own: the standbys of those
// messages may still surface, and an instance that started after the ack
// was first shared (a restarted qgate, in a rolling restart) would not
// know it once this one is gone, and would deliver them a second time.
// Bounded in all by twice the check timeout or ackWriteTimeout, whichever
// is longer; what is not written by then is not handed over.
func (b *ackBus) handover() {
	now := time.Now()
	recent := b.p.acked.recent(now.Add(-2 * b.p.cfg.StandbyDelay))
	if len(recent) == 0 {
		return
	}
	var bodies [][]byte
	n := 0
	for k, ids := range recent {
		for len(ids) > 0 {
			part := ids[:min(len(ids), ackBatchMax)]
			ids = ids[len(part):]
			bodies = append(bodies, envelope.AppendAckRecord(nil, &envelope.AckRecord{
				Instance: b.instance, Topic: k.topic, Channel: k.channel, IDs: part, Sent: now}))
			n += len(part)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(2*b.p.cfg.Check.Timeout, ackWriteTimeout))
	defer cancel()
	for len(bodies) > 0 && ctx.Err() == nil {
		part := bodies[:min(len(bodies), 32)] // under nsqd's 5 MiB MPUB at 1000 ids of 64 bytes
		bodies = bodies[len(part):]
		if err := b.write(ctx, part); err != nil {
			b.p.log.Warn("nsq acks not handed over (their standbys may be delivered twice)", "err", err)
			return
		}
	}
	b.p.log.Info("nsq acks handed over to the other instances", "ids", n)
}

// publishLoop batches queued ids into records and writes them.
func (b *ackBus) publishLoop() {
	defer b.done.Done()
	batch := make(map[chanKey]*envelope.AckRecord)
	n := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// A record's Sent is when its batch began: readers measure from it how
	// far records trail their events (see busPeers).
	var batchStart time.Time
	add := func(a ackNote) {
		if n == 0 {
			batchStart = time.Now()
		}
		k := chanKey{a.topic, a.channel}
		r := batch[k]
		if r == nil {
			r = &envelope.AckRecord{Instance: b.instance, Topic: a.topic, Channel: a.channel, Sent: batchStart}
			batch[k] = r
		}
		switch {
		case a.id == "": // a heartbeat: the record alone says this instance is there
		case a.until.IsZero():
			r.IDs = append(r.IDs, a.id)
		default:
			r.Held = append(r.Held, envelope.Hold{ID: a.id, Until: a.until, Since: a.since})
		}
		n++
	}
	heartbeat := time.NewTicker(ackHeartbeat)
	defer heartbeat.Stop()
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
		case <-heartbeat.C:
			if n == 0 && len(pending) == 0 {
				add(ackNote{})
				flush()
			}
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
			b.p.peers.seen(now, rec.Sent)
			if len(rec.IDs) > 0 {
				b.p.acked.add(rec.Topic, rec.Channel, rec.IDs, now)
			}
			if len(rec.Held) > 0 {
				b.p.acked.hold(rec.Topic, rec.Channel, rec.Instance, rec.Held, now)
				b.echo(rec, now)
			}
		}
		_ = d.Acker.Ack()
	}
}

// echo says again that ids this instance knows acked were acked, when
// another instance claims them (a hold that has not ended): that instance
// has not heard of the ack (it started after the ack was shared: a
// restarted qgate), and learns it within its claim's settle time instead
// of delivering the copy it holds a second time.
func (b *ackBus) echo(rec envelope.AckRecord, now time.Time) {
	for _, h := range rec.Held {
		if !h.Until.After(now) {
			continue // the end of a hold, not a claim
		}
		if acked, _ := b.p.acked.state(rec.Topic, rec.Channel, h.ID, now); acked {
			b.note(rec.Topic, rec.Channel, h.ID, time.Time{}, time.Time{})
		}
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
