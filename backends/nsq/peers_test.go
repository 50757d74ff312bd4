package nsq

import (
	"testing"
	"time"
)

// TestBusPeers: the lag other instances' records trail by is the largest
// of the current and the previous 15-second window, records without a
// send time update presence but not the lag, and an instance not heard of
// for peerTTL is gone.
func TestBusPeers(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var b busPeers
	if _, ok := b.lag(t0); ok {
		t.Fatal("a peer before any record")
	}
	steps := []struct {
		name      string
		read      time.Duration // when the record is read, after t0
		trail     time.Duration // how long before that it was written; -1: no send time
		asked     time.Duration // when lag is asked, after t0
		wantLag   time.Duration
		wantPeers bool
	}{
		{"first record", 0, 100 * time.Millisecond, 0, 100 * time.Millisecond, true},
		{"a larger lag", time.Second, 300 * time.Millisecond, time.Second, 300 * time.Millisecond, true},
		{"a smaller one keeps the largest", 2 * time.Second, 10 * time.Millisecond, 2 * time.Second, 300 * time.Millisecond, true},
		{"no send time: presence only", 3 * time.Second, -1, 3 * time.Second, 300 * time.Millisecond, true},
		// 16 s after the first window opened: a new one; the last window's largest still counts.
		{"next window", 16 * time.Second, 50 * time.Millisecond, 16 * time.Second, 300 * time.Millisecond, true},
		// Another window later the 300 ms one is forgotten.
		{"two windows on", 32 * time.Second, 20 * time.Millisecond, 32 * time.Second, 50 * time.Millisecond, true},
		{"heard of peerTTL ago", 32 * time.Second, 20 * time.Millisecond, 32*time.Second + peerTTL, 50 * time.Millisecond, true},
		{"gone after peerTTL", 32 * time.Second, 20 * time.Millisecond, 32*time.Second + peerTTL + time.Millisecond, 0, false},
	}
	var lastRead time.Duration = -1
	for _, s := range steps {
		if s.read != lastRead {
			sent := time.Time{}
			if s.trail >= 0 {
				sent = at(s.read - s.trail)
			}
			b.seen(at(s.read), sent)
			lastRead = s.read
		}
		lag, ok := b.lag(at(s.asked))
		if ok != s.wantPeers || lag != s.wantLag {
			t.Errorf("%s: lag %v, peers %v; want %v, %v", s.name, lag, ok, s.wantLag, s.wantPeers)
		}
	}
}

// TestSettleFor: a claiming copy waits twice the bus lag, at least
// Config.ClaimSettle and at most an eighth of the standby delay; not at
// all without an ack bus, without peers, or with ClaimSettle negative.
func TestSettleFor(t *testing.T) {
	now := time.Unix(1000, 0)
	cases := []struct {
		name   string
		bus    bool
		settle time.Duration
		lag    time.Duration // -1: no peer heard of
		want   time.Duration
	}{
		{"no bus", false, 250 * time.Millisecond, 100 * time.Millisecond, 0},
		{"no peer", true, 250 * time.Millisecond, -1, 0},
		{"off", true, -1, 100 * time.Millisecond, 0},
		{"small lag: the floor", true, 250 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond},
		{"twice the lag", true, 250 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond},
		// standby delay 30 s: at most 30/8 = 3.75 s
		{"the ceiling", true, 250 * time.Millisecond, 5 * time.Second, 3750 * time.Millisecond},
	}
	for _, c := range cases {
		p := &Pool{cfg: Config{StandbyDelay: 30 * time.Second, ClaimSettle: c.settle}}
		if c.bus {
			p.bus = &ackBus{}
		}
		if c.lag >= 0 {
			p.peers.seen(now, now.Add(-c.lag))
		}
		if got := p.settleFor(now); got != c.want {
			t.Errorf("%s: settleFor %v, want %v", c.name, got, c.want)
		}
	}
}
