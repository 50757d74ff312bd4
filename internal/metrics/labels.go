package metrics

import (
	"sync"
	"time"
)

// OtherLabel is the topic (and channel) label value of everything beyond
// the cap on distinct label values. It cannot be a real NSQ topic or
// channel name: nsqd allows '#' only in the suffix "#ephemeral".
const OtherLabel = "#other"

// Defaults of the label bounds (WithLabelIdle, WithMaxLabelValues).
const (
	// DefaultLabelIdle is how long a topic, or a topic and channel, may go
	// unused before its series are removed.
	DefaultLabelIdle = 10 * time.Minute
	// DefaultMaxLabelValues is the most distinct topics, and separately the
	// most distinct topic/channel pairs, that get series of their own.
	DefaultMaxLabelValues = 1000
)

// labelKey is a topic (channel "") or a topic and channel.
type labelKey struct{ topic, channel string }

// labelUse is what the limiter knows of one key: when it was last seen
// used, whether it was used since, and how many open subscriptions keep it
// (a pinned key is never idle).
//
// A use only sets used; the sweep turns that into last = the sweep's time.
// Reading the clock on every send, delivery and ack cost more than the rest
// of the limiter together (time.Now took 32 % of a SendAttempt's CPU on
// the 2-core VM); the idle time is measured from the first scrape after the
// last use instead, one scrape interval late at most.
type labelUse struct {
	last time.Time
	used bool
	pins int
}

// labelLimiter decides the topic and channel label values of qgate's
// series: a key's own names while fewer than max keys of its kind are
// known, else OtherLabel; and which keys have been idle long enough for
// their series to go. Topics and topic/channel pairs are bounded
// separately, so a gateway's many channels do not crowd its topics out.
type labelLimiter struct {
	now  func() time.Time
	idle time.Duration
	max  int

	mu     sync.Mutex
	topics map[labelKey]*labelUse // channel ""
	pairs  map[labelKey]*labelUse
}

func newLabelLimiter(now func() time.Time, idle time.Duration, max int) *labelLimiter {
	return &labelLimiter{now: now, idle: idle, max: max,
		topics: make(map[labelKey]*labelUse), pairs: make(map[labelKey]*labelUse)}
}

// topic marks topic used and returns its label value.
func (l *labelLimiter) topic(topic string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.use(l.topics, labelKey{topic: topic}, 0).topic
}

// pair marks topic/channel used and returns their label values.
func (l *labelLimiter) pair(topic, channel string) (string, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.use(l.pairs, labelKey{topic, channel}, 0)
	return k.topic, k.channel
}

// pin marks topic/channel used until unpin is called with the label values
// pin returned: an open subscription keeps its series however quiet it is.
func (l *labelLimiter) pin(topic, channel string) (string, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.use(l.pairs, labelKey{topic, channel}, 1)
	return k.topic, k.channel
}

// unpin ends a pin of the label values topic/channel; the key's idle time
// starts now.
func (l *labelLimiter) unpin(topic, channel string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u := l.pairs[labelKey{topic, channel}]; u != nil {
		u.pins--
		u.last, u.used = l.now(), false // the last use is now
	}
}

// use marks k used in keys (adding pins) and returns the key its series
// are labelled with: k itself if known or if there is room, else the
// OtherLabel key, which does not count against the cap.
func (l *labelLimiter) use(keys map[labelKey]*labelUse, k labelKey, pins int) labelKey {
	u := keys[k]
	if u == nil {
		other := labelKey{topic: OtherLabel}
		if k.channel != "" {
			other.channel = OtherLabel
		}
		n := len(keys)
		if _, ok := keys[other]; ok {
			n--
		}
		if n >= l.max {
			k = other
			u = keys[k]
		}
		if u == nil {
			u = &labelUse{last: l.now()}
			keys[k] = u
		}
	}
	u.used = true
	u.pins += pins
	return k
}

// sweep forgets the keys idle for longer than the idle time and calls
// drop for each, with the limiter locked: a use racing with the sweep
// either comes first (the key is not idle) or after drop (its series is
// made anew), never in between, where its count would be lost.
func (l *labelLimiter) sweep(drop func(labelKey)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	cutoff := now.Add(-l.idle)
	for _, keys := range []map[labelKey]*labelUse{l.topics, l.pairs} {
		for k, u := range keys {
			if u.used {
				u.used, u.last = false, now
				continue
			}
			if u.pins <= 0 && u.last.Before(cutoff) {
				delete(keys, k)
				drop(k)
			}
		}
	}
}
