package service

import (
	"strconv"
	"sync"
	"time"

	"github.com/qgate/qgate/backends"
)

// ackTable maps the ack ids of one Subscribe stream to their deliveries.
//
// Ack ids are a per-stream counter in decimal. An entry leaves the table when
// the client acks or nacks it; an entry whose deadline passed (the backend
// handed it back) is dropped when the table is full, so the table holds at
// most a few times max in flight entries however the client behaves.
type ackTable struct {
	mu       sync.Mutex
	next     uint64
	m        map[uint64]*ackEntry
	limit    int
	deadline time.Duration
}

type ackEntry struct {
	d       *backends.Delivery
	expires time.Time
}

func newAckTable(maxInFlight int, deadline time.Duration) *ackTable {
	return &ackTable{
		m:        make(map[uint64]*ackEntry, maxInFlight),
		limit:    2 * maxInFlight,
		deadline: deadline,
	}
}

// add stores d and returns its ack id.
func (t *ackTable) add(d *backends.Delivery) string {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.limit/2 {
		t.evict(now)
	}
	t.next++
	t.m[t.next] = &ackEntry{d: d, expires: now.Add(t.deadline)}
	return strconv.FormatUint(t.next, 10)
}

// evict drops entries past their deadline, and if the table is still at its
// limit, the one that expires first. The backend no longer counts expired
// deliveries as in flight, so without this a client that never acks would
// grow the table without bound.
func (t *ackTable) evict(now time.Time) {
	var oldest uint64
	var oldestAt time.Time
	for id, e := range t.m {
		if !e.expires.After(now) {
			delete(t.m, id)
			continue
		}
		if oldest == 0 || e.expires.Before(oldestAt) {
			oldest, oldestAt = id, e.expires
		}
	}
	if len(t.m) >= t.limit && oldest != 0 {
		delete(t.m, oldest)
	}
}

// take removes and returns the delivery of ackID.
func (t *ackTable) take(ackID string) (*backends.Delivery, bool) {
	id, ok := parseAckID(ackID)
	if !ok {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[id]
	if !ok {
		return nil, false
	}
	delete(t.m, id)
	return e.d, true
}

// touch returns the delivery of ackID and restarts its deadline.
func (t *ackTable) touch(ackID string) (*backends.Delivery, bool) {
	id, ok := parseAckID(ackID)
	if !ok {
		return nil, false
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[id]
	if !ok {
		return nil, false
	}
	e.expires = now.Add(t.deadline)
	return e.d, true
}

// forget removes ackID (its delivery is gone from the backend).
func (t *ackTable) forget(ackID string) {
	if id, ok := parseAckID(ackID); ok {
		t.mu.Lock()
		delete(t.m, id)
		t.mu.Unlock()
	}
}

// len returns the number of entries.
func (t *ackTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// parseAckID accepts only the canonical form add produces.
func parseAckID(s string) (uint64, bool) {
	if s == "" || len(s) > 20 || s[0] == '0' {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 10, 64)
	return id, err == nil
}
