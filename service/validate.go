package service

import (
	"cmp"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// idPlaceholder has the length of every message id the service assigns;
// requests are sized before ids are.
const idPlaceholder = "00000000000000000000000000000000"

// backendSizer sizes messages as a backend stores them (backends.Sizer, or
// body and attributes for a backend that is not one).
type backendSizer struct{ b backends.Backend }

func (s backendSizer) MessageSize(m *backends.Message) int { return backends.MessageSize(s.b, m) }
func (s backendSizer) BatchSize(n, total int) int          { return backends.BatchSize(s.b, n, total) }

// violations collects the bad fields of one request.
type violations struct {
	list    []*errdetails.BadRequest_FieldViolation
	dropped int
}

func (v *violations) add(field, desc string) {
	if len(v.list) >= maxViolations {
		v.dropped++
		return
	}
	v.list = append(v.list, &errdetails.BadRequest_FieldViolation{Field: field, Description: desc})
}

func (v *violations) addf(field, format string, args ...any) {
	v.add(field, fmt.Sprintf(format, args...))
}

func (v *violations) empty() bool { return len(v.list) == 0 }

// err returns nil if there are no violations, else an INVALID_ARGUMENT
// status error with a BadRequest detail. what names the request.
func (v *violations) err(what string) error {
	if v.empty() {
		return nil
	}
	first := v.list[0]
	msg := fmt.Sprintf("invalid %s: %s %s", what, first.Field, first.Description)
	if n := len(v.list) + v.dropped - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more)", n)
	}
	st := status.New(codes.InvalidArgument, msg)
	if v.dropped > 0 {
		v.list = append(v.list, &errdetails.BadRequest_FieldViolation{
			Description: fmt.Sprintf("%d more violations not listed", v.dropped),
		})
	}
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: v.list}); err == nil {
		st = d
	}
	return st.Err()
}

// checkName adds a violation if name is not a valid topic or channel name.
func (v *violations) checkName(field, name string) {
	if p := nameProblem(name); p != "" {
		v.add(field, p)
	}
}

// checkDuration validates an optional duration field in [lo, hi] and returns
// its value (def if unset).
func (v *violations) checkDuration(field string, d *durationpb.Duration, def, lo, hi time.Duration) time.Duration {
	if d == nil {
		return def
	}
	if err := d.CheckValid(); err != nil {
		v.add(field, "is not a valid duration")
		return def
	}
	got := d.AsDuration()
	switch {
	case got < 0:
		v.addf(field, "is %v; must not be negative", got)
	case got < lo:
		v.addf(field, "is %v; at least %v is required", got, lo)
	case got > hi:
		v.addf(field, "is %v; at most %v is allowed", got, hi)
	}
	return got
}

// checkSend validates a Send request against l, with messages sized by sz
// as the backend stores them, and returns its delay.
func checkSend(l *Limits, sz backends.Sizer, req *qgatev1.SendRequest) (time.Duration, error) {
	var v violations
	v.checkName("topic", req.GetTopic())
	maxDelay := cmp.Or(l.MaxSendDelay, l.MaxDelay)
	delay := v.checkDuration("delay", req.GetDelay(), 0, 0, maxDelay)
	if at := req.GetDeliverAt(); at != nil {
		switch err := at.CheckValid(); {
		case err != nil:
			v.addf("deliver_at", "is not a valid timestamp: %v", err)
		case req.GetDelay() != nil:
			v.add("deliver_at", "is set with delay; set one of them")
		default:
			t := at.AsTime()
			if delay = max(time.Until(t), 0); delay > maxDelay {
				v.addf("deliver_at", "is %s, %v from now; at most %v ahead is allowed",
					t.Format(time.RFC3339Nano), delay.Round(time.Second), maxDelay)
			}
		}
	}
	if r := req.GetReplicas(); r > MaxReplicas {
		v.addf("replicas", "is %d; at most %d are allowed (0 means the server default)", r, MaxReplicas)
	}

	msgs := req.GetMessages()
	switch {
	case len(msgs) == 0:
		v.add("messages", "at least one message is required")
	case len(msgs) > l.MaxBatchMessages:
		v.addf("messages", "has %d messages; at most %d are allowed", len(msgs), l.MaxBatchMessages)
	}
	total := 0
	var seen map[string]int // client-chosen ids: index of the first with each
	for i, m := range msgs {
		if m == nil {
			m = &qgatev1.Message{}
		}
		id := m.GetId()
		if id != "" {
			seen = checkMessageID(&v, i, id, seen)
		}
		checkAttributes(&v, i, m.GetAttributes())
		var expires time.Time // any non-zero time: sized as the largest
		if ttl := checkTTL(&v, i, m.GetTtl(), delay); ttl > 0 {
			expires = time.Unix(0, 1)
		}
		body := m.GetBody()
		if len(body) == 0 {
			v.add(msgField(i, "body"), "is empty; at least 1 byte is required")
			continue
		}
		stored := &backends.Message{ID: cmp.Or(id, idPlaceholder), Attributes: m.GetAttributes(), Body: body, ClientID: id != "", ExpireAt: expires}
		size := sz.MessageSize(stored)
		if size > l.MaxBodyBytes {
			v.add(msgField(i, "body"), tooBig(l, sz, stored, size))
		}
		total += size
	}
	if batch := sz.BatchSize(len(msgs), total); batch > l.MaxBatchBytes {
		v.addf("messages", "are %d bytes in all as stored, with qgate's envelope and the store's framing; at most %d are allowed",
			batch, l.MaxBatchBytes)
	}
	return delay, v.err("send request")
}

// Limits of Message.ttl.
const (
	MinTTL = time.Millisecond
	MaxTTL = 366 * 24 * time.Hour
)

// checkTTL validates messages[i].ttl against the request's delay and
// returns it (0: none).
func checkTTL(v *violations, i int, d *durationpb.Duration, delay time.Duration) time.Duration {
	if d == nil {
		return 0
	}
	field := msgField(i, "ttl")
	ttl := v.checkDuration(field, d, 0, 0, MaxTTL)
	switch {
	case ttl <= 0:
		return 0
	case ttl < MinTTL:
		v.addf(field, "is %v; at least %v is required (0 or unset: never expires)", ttl, MinTTL)
	case ttl <= delay:
		v.addf(field, "is %v; it must be longer than the delay (%v), or the message expires before it is due", ttl, delay)
	}
	return ttl
}

// tooBig says why a body of size bytes as stored is refused: the store's
// own limit counts qgate's envelope, so a body of exactly nsqd's
// --max-msg-size never fits; it gives the largest body that would, with
// these attributes (and id), and which two settings to raise together.
func tooBig(l *Limits, sz backends.Sizer, m *backends.Message, size int) string {
	largest := largestBody(l.MaxBodyBytes, sz, m, size)
	return fmt.Sprintf("is %d bytes as stored: %d of body and %d of qgate's envelope (message id, attributes, times); "+
		"at most %d are allowed (the nodes' --max-msg-size, which qgate's --max-body-size must equal), "+
		"so with these attributes a body may have at most %d bytes; for larger bodies raise both",
		size, len(m.Body), size-len(m.Body), l.MaxBodyBytes, largest)
}

// largestBody is the longest prefix of m's body that fits limit once
// sized with m's id and attributes, found from the envelope's size for
// this body (the body's length prefix may be a byte shorter for a shorter
// body); 0 if no body fits.
func largestBody(limit int, sz backends.Sizer, m *backends.Message, size int) int {
	with := func(n int) int {
		c := *m
		c.Body = m.Body[:n]
		return sz.MessageSize(&c)
	}
	n := max(len(m.Body)-(size-limit), 0) // negative: the envelope alone is too big
	for n > 0 && with(n) > limit {
		n--
	}
	for n+1 < len(m.Body) && with(n+1) <= limit {
		n++
	}
	return n
}

// checkMessageID validates the client-chosen id of message i (not empty):
// its length, its charset, and that no earlier message of the request has
// it (seen: id -> first index; allocated on first use and returned).
func checkMessageID(v *violations, i int, id string, seen map[string]int) map[string]int {
	switch {
	case len(id) > maxMessageIDLen:
		v.addf(msgField(i, "id"), "is %d bytes; at most %d are allowed", len(id), maxMessageIDLen)
		return seen
	case !validMessageID(id):
		v.add(msgField(i, "id"), "has a character outside [A-Za-z0-9._:-]")
		return seen
	}
	if first, ok := seen[id]; ok {
		v.addf(msgField(i, "id"), "duplicates messages[%d].id; ids must be distinct within a request", first)
		return seen
	}
	if seen == nil {
		seen = make(map[string]int)
	}
	seen[id] = i
	return seen
}

// validMessageID reports whether id is made of [A-Za-z0-9._:-] only:
// printable ASCII that needs no escaping in logs, URLs or headers, and
// compares byte for byte (no Unicode normalization to disagree on).
func validMessageID(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

func msgField(i int, name string) string {
	return "messages[" + strconv.Itoa(i) + "]." + name
}

// checkAttributes validates the attributes of message i.
func checkAttributes(v *violations, i int, attrs map[string]string) {
	if len(attrs) == 0 {
		return
	}
	if len(attrs) > maxAttributes {
		v.addf(msgField(i, "attributes"), "has %d attributes; at most %d are allowed", len(attrs), maxAttributes)
	}
	for k, val := range attrs {
		switch {
		case k == "":
			v.add(attrField(i, k), "key is empty; 1 to 256 bytes are required")
		case len(k) > maxAttrKeyBytes:
			v.addf(attrField(i, k), "key is %d bytes; at most %d are allowed", len(k), maxAttrKeyBytes)
		case !utf8.ValidString(k):
			v.add(attrField(i, k), "key is not valid UTF-8")
		}
		switch {
		case len(val) > maxAttrValBytes:
			v.addf(attrField(i, k), "value is %d bytes; at most %d are allowed", len(val), maxAttrValBytes)
		case !utf8.ValidString(val):
			v.add(attrField(i, k), "value is not valid UTF-8")
		}
	}
}

// attrField names an attribute: messages[i].attributes["key"], with long
// keys shortened.
func attrField(i int, k string) string {
	if len(k) > 64 {
		k = k[:64] + "..."
	}
	return msgField(i, "attributes") + "[" + strconv.Quote(k) + "]"
}

// checkOpen validates a Subscribe open message and returns the effective
// settings: the backend's, and how deliveries are packed into responses.
func checkOpen(l *Limits, o *qgatev1.SubscribeRequest_Open) (backends.SubscribeOptions, batching, error) {
	var v violations
	v.checkName("open.topic", o.GetTopic())
	v.checkName("open.channel", o.GetChannel())
	opts := backends.SubscribeOptions{
		Topic:       o.GetTopic(),
		Channel:     o.GetChannel(),
		MaxInFlight: int(o.GetMaxInFlight()),
		MaxAttempts: int(o.GetMaxAttempts()),
		// Expired messages to the dead-letter topic.
		DeadLetterExpired: o.GetDeadLetterExpired(),
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = DefaultSubscribeMaxInFlight
	}
	if opts.MaxInFlight > l.MaxInFlight {
		v.addf("open.max_in_flight", "is %d; at most %d is allowed", opts.MaxInFlight, l.MaxInFlight)
	}
	batch := batching{max: max(int(o.GetMaxBatch()), 1), bytes: int(o.GetMaxBatchBytes())}
	switch {
	case batch.max > maxMaxBatch:
		v.addf("open.max_batch", "is %d; at most %d is allowed", batch.max, maxMaxBatch)
	case batch.max > opts.MaxInFlight:
		v.addf("open.max_batch", "is %d; at most max_in_flight (%d) is allowed", batch.max, opts.MaxInFlight)
	}
	if batch.bytes == 0 {
		batch.bytes = defaultMaxBatchBytes
	}
	if batch.bytes > maxMaxBatchBytes {
		v.addf("open.max_batch_bytes", "is %d; at most %d (64 MiB) is allowed", batch.bytes, maxMaxBatchBytes)
	}
	opts.AckDeadline = v.checkDuration("open.ack_deadline", o.GetAckDeadline(),
		DefaultAckDeadline, MinAckDeadline, l.MaxAckDeadline)
	if opts.MaxAttempts > maxMaxAttempts {
		v.addf("open.max_attempts", "is %d; at most %d is allowed", opts.MaxAttempts, maxMaxAttempts)
	}
	switch dl := o.GetDeadLetterTopic(); {
	case dl != "":
		v.checkName("open.dead_letter_topic", dl)
		opts.DeadLetterTopic = dl
	case ValidName(o.GetTopic()):
		dl = deadLetterDefault(o.GetTopic())
		if p := nameProblem(dl); p == "" {
			opts.DeadLetterTopic = dl
		} else if opts.MaxAttempts > 0 || opts.DeadLetterExpired {
			v.addf("open.dead_letter_topic", "is unset and the default %q %s; name one", dl, p)
		}
	}
	opts.Retry = checkRetryPolicy(&v, o.GetRetryPolicy(), l.MaxDelay)
	switch f := o.GetFilter(); {
	case len(f) > MaxFilterBytes:
		v.addf("open.filter", "is %d bytes; at most %d are allowed", len(f), MaxFilterBytes)
	case f != "":
		pred, err := compileFilter(f)
		if err != nil {
			v.add("open.filter", err.Error())
		}
		opts.Filter = pred
	}
	return opts, batch, v.err("open")
}

// Limits and defaults of open.retry_policy.
const (
	MinRetryBackoff        = 10 * time.Millisecond
	DefaultMinRetryBackoff = time.Second
	DefaultMaxRetryBackoff = 10 * time.Minute
)

// checkRetryPolicy validates open.retry_policy (nil: none) and returns it
// with its defaults; maxDelay bounds both backoffs (a redelivery is a
// deferred requeue).
func checkRetryPolicy(v *violations, p *qgatev1.RetryPolicy, maxDelay time.Duration) *backends.RetryPolicy {
	if p == nil {
		return nil
	}
	lo := v.checkDuration("open.retry_policy.minimum_backoff", p.GetMinimumBackoff(), DefaultMinRetryBackoff, MinRetryBackoff, maxDelay)
	hi := v.checkDuration("open.retry_policy.maximum_backoff", p.GetMaximumBackoff(), max(min(DefaultMaxRetryBackoff, maxDelay), lo), lo, maxDelay)
	return &backends.RetryPolicy{Min: lo, Max: hi}
}

// batching is how a subscription packs deliveries into responses.
type batching struct {
	max   int // most deliveries per response; 1: `delivery` responses
	bytes int // byte budget of a `deliveries` response (see deliverBatches)
}
