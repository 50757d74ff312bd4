package chaos

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// Outcome is what a client learned from one send attempt.
type Outcome int

// Send outcomes, as in Jepsen's total-queue checker.
const (
	// Acked: the server answered OK; the messages must be delivered.
	Acked Outcome = iota
	// Failed: the server answered with an error that says nothing was
	// written (a rejected request).
	Failed
	// Unknown: the outcome is indeterminate: a deadline passed, the stream
	// or connection broke, or the server said it may or may not have written.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return "invalid"
}

// SendRecord is one send attempt: the harness's own ids of the messages it
// carried, its outcome, when it started and ended, and for an error the
// client-visible code (a gRPC code name such as "Unavailable").
type SendRecord struct {
	IDs []string
	// MessageIDs, for an acked send, are the ids the server returned, in
	// the order of IDs (may be nil).
	MessageIDs []string
	Outcome    Outcome
	Code       string
	Start, End time.Time
}

// DeliveryRecord is one delivery seen by a subscriber. Acked is false for a
// subscriber that does not ack (its deliveries do not count as consumed).
type DeliveryRecord struct {
	ID string
	// MessageID is the server's message id on the delivery ("" if not
	// known); it must be the one Send returned for ID.
	MessageID  string
	Attempt    int
	At         time.Time
	Acked      bool
	Subscriber string
}

// Ledger records send attempts and deliveries. It is safe for concurrent
// use; Check reads a consistent snapshot.
type Ledger struct {
	mu         sync.Mutex
	sends      []SendRecord
	deliveries []DeliveryRecord
	last       time.Time // the latest delivery
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{} }

// RecordSend records one send attempt. The ids slice is kept; do not
// modify it afterwards.
func (l *Ledger) RecordSend(r SendRecord) {
	l.mu.Lock()
	l.sends = append(l.sends, r)
	l.mu.Unlock()
}

// RecordDelivery records one delivery.
func (l *Ledger) RecordDelivery(d DeliveryRecord) {
	l.mu.Lock()
	l.deliveries = append(l.deliveries, d)
	if d.At.After(l.last) {
		l.last = d.At
	}
	l.mu.Unlock()
}

// Counts returns how many send attempts and deliveries are recorded, and
// when the latest delivery was seen (zero if none).
func (l *Ledger) Counts() (sends, deliveries int, last time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sends), len(l.deliveries), l.last
}

// Deliveries returns a copy of the recorded deliveries.
func (l *Ledger) Deliveries() []DeliveryRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.deliveries)
}

// Sends returns a copy of the recorded send attempts.
func (l *Ledger) Sends() []SendRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sends)
}

// Result is what Check finds. Counts are of distinct message ids unless
// named otherwise.
type Result struct {
	// Attempted messages, and by outcome of their (last) send attempt.
	Attempted, Acked, Failed, Unknown int
	// Delivered: distinct ids with at least one acked delivery.
	Delivered int
	// Lost: acked, never delivered (acked by a subscriber). A broken
	// at-least-once promise.
	Lost []string
	// Unexpected: delivered, never sent. Always a bug.
	Unexpected []string
	// Duplicated: ids delivered (acked) more than once; Redeliveries counts
	// every delivery beyond the first, acked or not.
	Duplicated   int
	Redeliveries int
	// AckedDeliveries counts every acked delivery, whichever subscriber or
	// qgate instance it reached; DuplicateDeliveries those beyond the first
	// of their id (a message acked by two subscribers is one duplicate).
	AckedDeliveries, DuplicateDeliveries int
	// AckedDelivered counts acked sends with at least one acked delivery,
	// from the delivery side of the ledger; it must equal Acked − Lost,
	// counted from the send side (see Imbalance).
	AckedDelivered int
	// Recovered: outcome unknown at the client, but delivered.
	Recovered int
	// FailedDelivered: the client was told the send failed, yet the message
	// was delivered.
	FailedDelivered int
	// UnknownMissing: outcome unknown and never delivered (allowed).
	UnknownMissing int
	// Mismatched: deliveries whose server message id is not the one Send
	// returned for the body's id (a body or id mixed up on the way).
	Mismatched int
	// SendErrors counts failed and unknown send attempts by code.
	SendErrors map[string]int
	// ErrorAttempts is the number of send attempts that did not succeed;
	// FirstError and LastError bound the window they fell in (zero if none).
	ErrorAttempts         int
	FirstError, LastError time.Time
	// P50 and P99 are the latencies of acked send attempts (0 if none).
	P50, P99 time.Duration
}

// maxListed bounds the ids kept in Lost and Unexpected.
const maxListed = 20

// Check compares sends and deliveries the way Jepsen's total-queue checker
// does. An id sent more than once counts with the outcome of its best
// attempt (acked over unknown over failed).
func (l *Ledger) Check() Result {
	l.mu.Lock()
	sends := slices.Clone(l.sends)
	deliveries := slices.Clone(l.deliveries)
	l.mu.Unlock()
	return check(sends, deliveries)
}

func check(sends []SendRecord, deliveries []DeliveryRecord) Result {
	r := Result{SendErrors: make(map[string]int)}
	outcome := make(map[string]Outcome)
	serverID := make(map[string]string)
	var lat []time.Duration
	for _, s := range sends {
		if s.Outcome == Acked {
			for i, mid := range s.MessageIDs {
				if i < len(s.IDs) {
					serverID[s.IDs[i]] = mid
				}
			}
		}
		if s.Outcome == Acked {
			lat = append(lat, s.End.Sub(s.Start))
		} else {
			r.ErrorAttempts++
			code := s.Code
			if code == "" {
				code = s.Outcome.String()
			}
			r.SendErrors[code]++
			if r.FirstError.IsZero() || s.End.Before(r.FirstError) {
				r.FirstError = s.End
			}
			if s.End.After(r.LastError) {
				r.LastError = s.End
			}
		}
		for _, id := range s.IDs {
			if o, ok := outcome[id]; !ok || rank(s.Outcome) < rank(o) {
				outcome[id] = s.Outcome
			}
		}
	}
	acked := make(map[string]int) // acked deliveries per id
	seen := make(map[string]int)  // all deliveries per id
	for _, d := range deliveries {
		if want, ok := serverID[d.ID]; ok && d.MessageID != "" && d.MessageID != want {
			r.Mismatched++
		}
		seen[d.ID]++
		if d.Acked {
			acked[d.ID]++
		}
	}
	r.Attempted = len(outcome)
	for id, o := range outcome {
		delivered := acked[id] > 0
		switch o {
		case Acked:
			r.Acked++
			if !delivered {
				r.Lost = append(r.Lost, id)
			}
		case Failed:
			r.Failed++
			if delivered {
				r.FailedDelivered++
			}
		case Unknown:
			r.Unknown++
			if delivered {
				r.Recovered++
			} else {
				r.UnknownMissing++
			}
		}
	}
	for id, n := range seen {
		r.Redeliveries += n - 1
		if acked[id] > 0 {
			r.Delivered++
		}
		if acked[id] > 1 {
			r.Duplicated++
			r.DuplicateDeliveries += acked[id] - 1
		}
		r.AckedDeliveries += acked[id]
		o, ok := outcome[id]
		if !ok {
			r.Unexpected = append(r.Unexpected, id)
		} else if o == Acked && acked[id] > 0 {
			r.AckedDelivered++
		}
	}
	sort.Strings(r.Lost)
	sort.Strings(r.Unexpected)
	r.P50, r.P99 = percentile(lat, 50), percentile(lat, 99)
	return r
}

// rank orders outcomes for an id sent more than once: an ack is
// conclusive, an unknown outcome may have written it, a failure did not.
func rank(o Outcome) int {
	switch o {
	case Acked:
		return 0
	case Unknown:
		return 1
	}
	return 2
}

// Imbalance is |AckedDelivered − (Acked − LostCount)|: 0 unless the
// ledger miscounts.
func (r Result) Imbalance() int {
	d := r.AckedDelivered - (r.Acked - r.LostCount())
	return max(d, -d)
}

// LostCount and UnexpectedCount are len(Lost) and len(Unexpected).
func (r Result) LostCount() int { return len(r.Lost) }

// UnexpectedCount is len(Unexpected).
func (r Result) UnexpectedCount() int { return len(r.Unexpected) }

// percentile returns the nearest-rank p-th percentile of d (0 if empty).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	rank := int(math.Ceil(p / 100 * float64(len(d))))
	return d[min(max(rank, 1), len(d))-1]
}

// listed formats up to maxListed ids.
func listed(ids []string) string {
	if len(ids) <= maxListed {
		return fmt.Sprint(ids)
	}
	return fmt.Sprintf("%v … (%d more)", ids[:maxListed], len(ids)-maxListed)
}
