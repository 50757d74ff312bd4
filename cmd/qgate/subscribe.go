package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

const subscribeAbout = `Subscribes to a topic through a channel of a running qgate, prints every
delivery and acks it after printing. Without --json it prints each body on a
line of its own; with --json, each delivery as one line of protobuf JSON
(message id, ack id, body in base64, attributes, attempt, publish time).
Stops after --count deliveries, or on Ctrl-C; unacked deliveries are handed
back for redelivery when it stops.`

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
	conn, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// gRPC's default receive limit is 4 MiB; a response is at most the
	// batch budget, or one delivery larger than it.
	recvLimit := max(4<<20, int(*batchBytes)+1<<20)
	stream, err := qgatev1.NewQueueServiceClient(conn).Subscribe(ctx, grpc.MaxCallRecvMsgSize(recvLimit))
	if err != nil {
		return err
	}
	open := &qgatev1.SubscribeRequest_Open{Topic: *topic, Channel: *channel, MaxInFlight: uint32(*maxInFlight),
		MaxBatch: uint32(*batch), MaxBatchBytes: uint32(*batchBytes)}
	if *ackDeadline > 0 {
		open.AckDeadline = durationpb.New(*ackDeadline)
	}
	if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
		return streamErr(ctx, err)
	}
	p := &printer{out: e.stdout, errOut: e.stderr, json: *asJSON, cancel: cancel}
	return p.consume(ctx, stream, *count)
}

// handle prints ds and acks them with one ack.
func (p *printer) handle(ctx context.Context, stream grpc.BidiStreamingClient[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse], ds []*qgatev1.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	ids := make([]string, len(ds))
	for i, d := range ds {
		if err := p.print(d); err != nil {
			return err
		}
		ids[i] = d.GetAckId()
	}
	ack := &qgatev1.SubscribeRequest_Ack{AckIds: ids}
	if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Ack_{Ack: ack}}); err != nil {
		return streamErr(ctx, err)
	}
	return nil
}

// printer prints deliveries and acks them.
type printer struct {
	out, errOut io.Writer
	json        bool
	cancel      func() // cancels the stream's context
}

// consume prints and acks deliveries until count have been handled (0: no
// limit), the stream ends or ctx is done (a clean end: nil).
func (p *printer) consume(ctx context.Context, stream grpc.BidiStreamingClient[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse], count int) error {
	for n := 0; count == 0 || n < count; {
		resp, err := stream.Recv()
		if err != nil {
			return streamErr(ctx, err)
		}
		switch kind := resp.GetKind().(type) {
		case *qgatev1.SubscribeResponse_AckError_:
			fmt.Fprintf(p.errOut, "ack %s: %s\n", kind.AckError.GetAckId(), kind.AckError.GetStatus().GetMessage())
		case *qgatev1.SubscribeResponse_Delivery:
			if err := p.handle(ctx, stream, []*qgatev1.Delivery{kind.Delivery}); err != nil {
				return err
			}
			n++
		case *qgatev1.SubscribeResponse_Deliveries_:
			// Past count, the rest are left unacked: the server hands
			// them back when the stream ends.
			ds := kind.Deliveries.GetDeliveries()
			if count > 0 {
				ds = ds[:min(len(ds), count-n)]
			}
			if err := p.handle(ctx, stream, ds); err != nil {
				return err
			}
			n += len(ds)
		}
	}
	// The last ack is sent; half-close and wait for the server to end the
	// stream, so the ack is processed before the connection closes.
	if err := stream.CloseSend(); err != nil {
		return streamErr(ctx, err)
	}
	// The stream's context is cancelled after a while in case the server
	// does not end the stream; that counts as a clean end too.
	timer := time.AfterFunc(5*time.Second, p.cancel)
	defer timer.Stop()
	for {
		if _, err := stream.Recv(); err != nil {
			return streamErr(ctx, err)
		}
	}
}

func (p *printer) print(d *qgatev1.Delivery) error {
	if p.json {
		b, err := protojson.Marshal(d)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.out, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(p.out, "%s\n", d.GetBody())
	return err
}

// streamErr maps the end of a stream to the command's result: a normal end
// or an interrupt is success.
func streamErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case ctx.Err() != nil && status.Code(err) == codes.Canceled:
		return nil
	}
	return err
}
