package chaos

import (
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func send(o Outcome, code string, startMS, endMS int, ids ...string) SendRecord {
	return SendRecord{IDs: ids, Outcome: o, Code: code, Start: at(startMS), End: at(endMS)}
}

func deliv(id string, attempt int, acked bool) DeliveryRecord {
	return DeliveryRecord{ID: id, Attempt: attempt, At: at(1000), Acked: acked, Subscriber: "s"}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name       string
		sends      []SendRecord
		deliveries []DeliveryRecord
		want       Result
	}{
		{
			name: "empty",
			want: Result{SendErrors: map[string]int{}},
		},
		{
			name:       "all delivered once",
			sends:      []SendRecord{send(Acked, "", 0, 10, "a", "b"), send(Acked, "", 0, 20, "c")},
			deliveries: []DeliveryRecord{deliv("a", 1, true), deliv("b", 1, true), deliv("c", 1, true)},
			want: Result{Attempted: 3, Acked: 3, Delivered: 3, AckedDeliveries: 3, AckedDelivered: 3, SendErrors: map[string]int{},
				P50: 10 * time.Millisecond, P99: 20 * time.Millisecond},
		},
		{
			name:       "acked never delivered is lost; unacked delivery does not count",
			sends:      []SendRecord{send(Acked, "", 0, 5, "a"), send(Acked, "", 0, 5, "b")},
			deliveries: []DeliveryRecord{deliv("a", 1, true), deliv("b", 1, false)},
			want: Result{Attempted: 2, Acked: 2, Delivered: 1, AckedDeliveries: 1, AckedDelivered: 1, Lost: []string{"b"}, SendErrors: map[string]int{},
				P50: 5 * time.Millisecond, P99: 5 * time.Millisecond},
		},
		{
			name:       "delivered never sent is unexpected",
			deliveries: []DeliveryRecord{deliv("x", 1, true)},
			want:       Result{Delivered: 1, AckedDeliveries: 1, Unexpected: []string{"x"}, SendErrors: map[string]int{}},
		},
		{
			name:  "duplicates and redeliveries",
			sends: []SendRecord{send(Acked, "", 0, 1, "a"), send(Acked, "", 0, 1, "b")},
			deliveries: []DeliveryRecord{
				deliv("a", 1, true), deliv("a", 2, true), // duplicate
				deliv("b", 1, false), deliv("b", 2, true), // redelivered, not duplicated
			},
			want: Result{Attempted: 2, Acked: 2, Delivered: 2, Duplicated: 1, Redeliveries: 2,
				AckedDeliveries: 3, DuplicateDeliveries: 1, AckedDelivered: 2,
				SendErrors: map[string]int{}, P50: time.Millisecond, P99: time.Millisecond},
		},
		{
			name:  "one message acked by two subscribers is a duplicate, three times is two",
			sends: []SendRecord{send(Acked, "", 0, 1, "a"), send(Acked, "", 0, 1, "b")},
			deliveries: []DeliveryRecord{
				{ID: "a", Attempt: 1, Acked: true, Subscriber: "g1-sub1"},
				{ID: "a", Attempt: 1, Acked: true, Subscriber: "g2-sub2"},
				{ID: "b", Attempt: 1, Acked: true, Subscriber: "g1-sub1"},
				{ID: "b", Attempt: 1, Acked: true, Subscriber: "g1-sub2"},
				{ID: "b", Attempt: 1, Acked: true, Subscriber: "g2-sub1"},
			},
			want: Result{Attempted: 2, Acked: 2, Delivered: 2, Duplicated: 2, Redeliveries: 3,
				AckedDeliveries: 5, DuplicateDeliveries: 3, AckedDelivered: 2,
				SendErrors: map[string]int{}, P50: time.Millisecond, P99: time.Millisecond},
		},
		{
			name: "unknown outcomes: recovered or missing; failed but delivered",
			sends: []SendRecord{
				send(Unknown, "DeadlineExceeded", 0, 2000, "u1"),
				send(Unknown, "Unavailable", 100, 150, "u2"),
				send(Failed, "InvalidArgument", 3000, 3001, "f1"),
			},
			deliveries: []DeliveryRecord{deliv("u1", 1, true), deliv("f1", 1, true)},
			want: Result{Attempted: 3, Failed: 1, Unknown: 2, Delivered: 2, AckedDeliveries: 2, Recovered: 1, UnknownMissing: 1,
				FailedDelivered: 1, ErrorAttempts: 3,
				SendErrors: map[string]int{"DeadlineExceeded": 1, "Unavailable": 1, "InvalidArgument": 1},
				FirstError: at(150), LastError: at(3001)},
		},
		{
			name:  "server message ids must match",
			sends: []SendRecord{{IDs: []string{"a", "b"}, MessageIDs: []string{"m1", "m2"}, Outcome: Acked, Start: at(0), End: at(1)}},
			deliveries: []DeliveryRecord{
				{ID: "a", MessageID: "m1", Attempt: 1, Acked: true},
				{ID: "b", MessageID: "m1", Attempt: 1, Acked: true}, // mixed up
				{ID: "b", Attempt: 2, Acked: true},                  // not known: not checked
			},
			want: Result{Attempted: 2, Acked: 2, Delivered: 2, Duplicated: 1, Redeliveries: 1, Mismatched: 1,
				AckedDeliveries: 3, DuplicateDeliveries: 1, AckedDelivered: 2,
				SendErrors: map[string]int{}, P50: time.Millisecond, P99: time.Millisecond},
		},
		{
			name: "an id retried counts with its best outcome",
			sends: []SendRecord{
				send(Unknown, "", 0, 100, "a"),
				send(Acked, "", 200, 210, "a"),
				send(Failed, "", 300, 310, "b"),
				send(Unknown, "", 400, 410, "b"),
			},
			want: Result{Attempted: 2, Acked: 1, Unknown: 1, Lost: []string{"a"}, UnknownMissing: 1, ErrorAttempts: 3,
				SendErrors: map[string]int{"unknown": 2, "failed": 1}, FirstError: at(100), LastError: at(410),
				P50: 10 * time.Millisecond, P99: 10 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLedger()
			for _, s := range tt.sends {
				l.RecordSend(s)
			}
			for _, d := range tt.deliveries {
				l.RecordDelivery(d)
			}
			got := l.Check()
			if !equalResult(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if got.Imbalance() != 0 {
				t.Errorf("imbalance %d: acked delivered %d, acked %d, lost %d", got.Imbalance(), got.AckedDelivered, got.Acked, got.LostCount())
			}
		})
	}
}

func equalResult(a, b Result) bool {
	if len(a.SendErrors) != len(b.SendErrors) {
		return false
	}
	for k, v := range a.SendErrors {
		if b.SendErrors[k] != v {
			return false
		}
	}
	a.SendErrors, b.SendErrors = nil, nil
	if !slices.Equal(a.Lost, b.Lost) || !slices.Equal(a.Unexpected, b.Unexpected) {
		return false
	}
	a.Lost, b.Lost, a.Unexpected, b.Unexpected = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100 … 1, unsorted
	}
	tests := []struct {
		d    []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(3, 1, 2), 50, 2 * time.Millisecond},
		{ms(hundred...), 50, 50 * time.Millisecond},
		{ms(hundred...), 99, 99 * time.Millisecond},
		{ms(hundred...), 100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.d, tt.p); got != tt.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(tt.d), tt.p, got, tt.want)
		}
	}
}

func TestTimings(t *testing.T) {
	ev := func(ms int, node, state, prev string) NodeEvent {
		return NodeEvent{At: at(ms), Node: node, State: state, Previous: prev}
	}
	events := []NodeEvent{
		ev(0, "n1", "up", ""), ev(0, "n2", "up", ""),
		ev(50, "n2", "down", "up"), // before the fault: ignored
		ev(60, "n2", "up", "down"),
		ev(1300, "n1", "down", "up"),
		ev(1500, "n2", "down", "up"),
		ev(5400, "n1", "up", "down"),
		ev(5200, "n2", "up", "down"),
	}
	tests := []struct {
		name string
		f    Fault
		want Timing
	}{
		{"one node", Fault{Nodes: []string{"n1"}, At: at(1000), Healed: at(5000)},
			Timing{Detect: 300 * time.Millisecond, Detected: true, Recover: 400 * time.Millisecond, Recovered: true}},
		{"two nodes: the slowest counts", Fault{Nodes: []string{"n1", "n2"}, At: at(1000), Healed: at(5000)},
			Timing{Detect: 500 * time.Millisecond, Detected: true, Recover: 400 * time.Millisecond, Recovered: true}},
		{"never healed", Fault{Nodes: []string{"n1"}, At: at(1000)},
			Timing{Detect: 300 * time.Millisecond, Detected: true}},
		{"not detected", Fault{Nodes: []string{"n3"}, At: at(1000), Healed: at(2000)}, Timing{}},
		{"no nodes", Fault{At: at(1000)}, Timing{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Timings(tt.f, events); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if got := Downs(events, []Fault{{Nodes: []string{"n1"}}}); got != 2 {
		t.Errorf("Downs = %d, want 2 (n2 twice)", got)
	}
}

func TestReportEvaluate(t *testing.T) {
	r := &Report{Scenario: "SX", Promises: []Promise{
		{Metric: "lost", Max: 0, Why: "at least once"},
		{Metric: "redelivery", Max: 5000, Why: "bounded"},
		{Metric: "absent", Max: 1, Why: "must be measured"},
	}}
	r.Add("lost", 0, "")
	r.Add("redelivery", 6000, "ms")
	r.Add("nan", math.NaN(), "ms")
	r.Evaluate()
	if len(r.Broken) != 2 || r.OK() {
		t.Errorf("broken %q, want redelivery and absent", r.Broken)
	}
	r.Promises = r.Promises[:1]
	r.Evaluate()
	if !r.OK() {
		t.Errorf("broken %q, want none", r.Broken)
	}
}

// TestBaselineNothingSent: a run that acked and delivered nothing breaks
// the baseline promises, whatever else it promised; lost = 0 alone proves
// nothing.
func TestBaselineNothingSent(t *testing.T) {
	r := &Report{Scenario: "SX", Promises: append(slices.Clone(baseline), Promise{Metric: "lost", Max: 0, Why: "at least once"})}
	r.addResult(NewLedger().Check(), time.Time{})
	r.Evaluate()
	if r.OK() || len(r.Broken) != 2 {
		t.Fatalf("broken %q, want acked and delivered", r.Broken)
	}
	l := NewLedger()
	l.RecordSend(send(Acked, "", 0, 1, "a"))
	l.RecordDelivery(deliv("a", 1, true))
	r.Metrics = nil
	r.addResult(l.Check(), time.Time{})
	r.Evaluate()
	if !r.OK() {
		t.Errorf("broken %q, want none", r.Broken)
	}
}

func TestPromiseBound(t *testing.T) {
	floor := Promise{Metric: "acked", Min: 1, Max: math.Inf(1)}
	for _, tt := range []struct {
		p      Promise
		v      float64
		broken bool
		bound  string
	}{
		{floor, 0, true, "≥ 1"},
		{floor, 5, false, "≥ 1"},
		{floor, math.NaN(), true, "≥ 1"},
		{Promise{Max: 0.1}, 0.1, false, "≤ 0.1"},
		{Promise{Max: 0.1}, 0.2, true, "≤ 0.1"},
		{Promise{Min: 1, Max: 5}, 6, true, "1 … 5"},
	} {
		if got := tt.p.broken(tt.v); got != tt.broken {
			t.Errorf("%+v broken(%v) = %v", tt.p, tt.v, got)
		}
		if got := tt.p.bound(); got != tt.bound {
			t.Errorf("%+v bound = %q, want %q", tt.p, got, tt.bound)
		}
	}
}
