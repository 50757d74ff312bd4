package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qgate/qgate/client"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

const subscribeAbout = `Subscribes to a topic through a channel of a running qgate, prints every
delivery and acks it after printing. Without --json it prints each body on a
line of its own; with --json, each delivery as one line of protobuf JSON
(message id, ack id, body in base64, attributes, attempt, publish time).
Stops after --count deliveries, or on Ctrl-C; unacked deliveries are handed
back for redelivery when it stops. When the stream breaks (qgate restarted,
unreachable) it says so on stderr and reconnects; it fails on errors that
retrying cannot fix (bad token, forbidden topic, bad name).`

const subscribeExample = `  qgate subscribe --topic orders --channel audit --count 10
  qgate subscribe --topic orders --channel 'tail#ephemeral' --json`

func runSubscribe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("subscribe", "qgate subscribe --topic TOPIC --channel CHANNEL [flags]",
		subscribeAbout, subscribeExample)
	cf := addClientFlags(fs)
	topic := fs.String("topic", "", "topic to read (required)")
	channel := fs.String("channel", "", "channel to read through (required; a name ending in #ephemeral is removed when its last subscriber leaves)")
	asJSON := fs.Bool("json", false, "print each delivery as a line of JSON")
	count := fs.Int("count", 0, "exit after this many deliveries (0: until interrupted)")
	maxInFlight := fs.Uint("max-in-flight", 0, "most unacked deliveries at once (0: the server's default, 100)")
	ackDeadline := fs.Duration("ack-deadline", 0, "time to ack a delivery before it is redelivered (0: the server's default, 60s)")
	batch := fs.Uint("batch", 0, "take up to this many deliveries per server response, acked together (0 or 1: one at a time; at most --max-in-flight)")
	filter := fs.String("filter", "", "deliver only messages for which this CEL expression over `attributes` is true, e.g. 'attributes.kind == \"order\"'; the others are finished on the channel, so give every subscriber of a channel the same filter")
	minBackoff := fs.Duration("min-backoff", 0, "with a retry policy: redeliver a message whose ack deadline passed after this, doubling per attempt (10ms to 1h; 0 with --max-backoff set: the server's default, 1s)")
	maxBackoff := fs.Duration("max-backoff", 0, "with a retry policy: the longest redelivery backoff (10ms to 1h; 0 with --min-backoff set: the server's default, 10m)")
	deadExpired := fs.Bool("dead-letter-expired", false, "write expired messages to the dead-letter topic (TOPIC.dead) instead of dropping them")
	batchBytes := fs.Uint("max-batch-bytes", 0, "with --batch, the most bytes per server response (0: the server's default, 1 MiB); this client accepts responses up to 4 MiB or this + 1 MiB, whichever is larger, so raise it to receive messages larger than 4 MiB")
	if err := fs.parse(e, args); err != nil {
		return err
	}
	if *topic == "" || *channel == "" {
		return fs.usageErr(e, "--topic and --channel are required")
	}
	if *batchBytes > math.MaxUint32 {
		return fs.usageErr(e, "--max-batch-bytes is too large")
	}
	c, err := cf.client(ctx, e)
	if err != nil {
		return err
	}
	defer c.Close()
	// One handler at a time: deliveries print in order, and --count is
	// exact. Deliveries past --count are left unacked: the server hands
	// them back when Receive ends.
	settings := client.ReceiveSettings{MaxOutstandingMessages: int(*maxInFlight), AckDeadline: *ackDeadline,
		MaxBatch: max(int(*batch), 1), MaxBatchBytes: int(*batchBytes), NumGoroutines: 1, DeadLetterExpired: *deadExpired, Filter: *filter,
		OnStreamError: func(err error) { fmt.Fprintf(e.stderr, "qgate subscribe: %v; reconnecting\n", err) }}
	if *minBackoff > 0 || *maxBackoff > 0 {
		settings.RetryPolicy = &client.RetryPolicy{MinBackoff: *minBackoff, MaxBackoff: *maxBackoff}
	}
	if settings.MaxOutstandingMessages == 0 {
		settings.MaxOutstandingMessages = serverDefaultMaxInFlight
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &printer{out: e.stdout, json: *asJSON}
	n := 0
	err = c.Subscriber(*topic, *channel, settings).Receive(ctx, func(_ context.Context, d *client.Delivery) {
		if p.err != nil || *count > 0 && n >= *count {
			return
		}
		if p.err = p.print(d); p.err != nil {
			cancel()
			return
		}
		d.Ack()
		if n++; *count > 0 && n >= *count {
			cancel()
		}
	})
	return errors.Join(err, p.err)
}

// serverDefaultMaxInFlight is the server's max_in_flight when a
// subscription asks for none, which --max-in-flight 0 keeps.
const serverDefaultMaxInFlight = 100

// printer prints deliveries.
type printer struct {
	out  io.Writer
	json bool
	err  error // the first failed print
}

func (p *printer) print(d *client.Delivery) error {
	if p.json {
		pd := &qgatev1.Delivery{MessageId: d.ID, AckId: d.AckID(), Body: d.Body, Attributes: d.Attributes,
			Attempt: uint32(d.Attempt)}
		if !d.PublishTime.IsZero() {
			pd.PublishTime = timestamppb.New(d.PublishTime)
		}
		if !d.ExpireTime.IsZero() {
			pd.ExpireTime = timestamppb.New(d.ExpireTime)
		}
		b, err := protojson.Marshal(pd)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.out, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(p.out, "%s\n", d.Body)
	return err
}
