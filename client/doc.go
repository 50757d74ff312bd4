// Package client is the Go client of qgate: a Publisher that batches
// one-message-at-a-time code into SendStream requests, and a Subscriber
// that runs handlers, keeps their leases alive, batches acks and rides
// through gateway restarts. It is modelled on cloud.google.com/go/pubsub.
//
//	c, err := client.New(ctx, "127.0.0.1:7070")
//	p := c.Publisher("orders", client.PublishSettings{})
//	id, err := p.Publish(ctx, &client.Message{Body: []byte("hello")}).Get(ctx)
//	p.Stop()
//
//	s := c.Subscriber("orders", "billing", client.ReceiveSettings{})
//	err = s.Receive(ctx, func(ctx context.Context, d *client.Delivery) {
//		process(d.Body)
//		d.Ack()
//	})
//
// # Connecting
//
// New takes a target ("host:port", "dns:///name:port" for every address
// of a name, or a comma-separated list of instances) and options: WithTLS
// (a tls.Config with a client certificate gives mutual TLS), WithToken or
// WithTokenFunc (qgate's bearer tokens), WithKeepalive,
// WithLoadBalancing. Calls and streams are spread round-robin over the
// instances; a broken stream is reopened on one that is up. The connection
// redials a gateway that went away after 100 ms growing to 5 s
// (DefaultReconnectBaseDelay, DefaultReconnectMaxDelay), not grpc-go's
// 1 s to 2 min.
//
// # Publishing
//
// Publish returns a *PublishResult at once; Get waits for the message id.
// Behind it, messages of a Publisher gather in a batch that is written as
// one request on a long-lived SendStream, with up to
// MaxOutstandingBatches (default 4) requests in flight. A batch is written
// as soon as a request slot is free, so a lone Publish costs one round
// trip, and messages published while every slot is busy gather in the next
// batch, up to CountThreshold (256) messages and ByteThreshold (1 MiB):
// the batching delay is at most one round trip and grows only with load.
// A DelayThreshold above 0 holds each batch open at least that long.
//
// Flow control bounds what is published and not yet settled
// (MaxOutstandingMessages 10000, MaxOutstandingBytes 64 MiB): at the bound
// Publish blocks (FlowBlock) or fails with ErrFlowControl (FlowFail).
//
// Messages with different Delay or Replicas go in different requests (the
// wire carries both per request); PublishSettings sets them for every
// message and Message overrides them.
//
// # Retries and duplicates
//
// A batch answered with UNAVAILABLE, DEADLINE_EXCEEDED or
// RESOURCE_EXHAUSTED, and every batch in flight on a stream that breaks,
// is sent again after an exponential backoff with jitter (DefaultRetry,
// 50 ms to 2 s), until it succeeds or its messages' Timeout (60 s from
// Publish) passes; then Get returns the last error. Permanent errors
// (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, ...) are returned
// at once.
//
// Every message carries an id chosen on the client: Message.ID, or one the
// Publisher assigns (a random prefix per Publisher and a counter), kept by
// every retry. So a retried batch whose first attempt was written after
// all (a gateway killed after nsqd acknowledged, a response lost with its
// connection) is delivered once per channel: qgate finishes a copy whose
// id was acknowledged on the channel, and holds one back while another
// copy is delivered and unsettled, within its dedup window (10 minutes,
// at most 200,000 ids per channel) and across qgate instances that share
// their ack records. Not covered: a retry that reaches a subscriber
// through another qgate instance in the few milliseconds before the
// first copy's delivery is known there, and a retry after the window.
// Delivery is at least once either way (a nack or an expired deadline
// redelivers); consumers that must not act twice still deduplicate by
// Delivery.ID. Two messages published with the same Message.ID are one
// message: one of them is delivered.
//
// A gateway that stops reading without closing its connection (a frozen
// process) is noticed only by keepalive (DefaultKeepaliveTime, bounded by
// the server's enforcement policy). Until then, once the stream's
// flow-control window is full, the sender waits in its write, and the
// deadlines of the batches behind it are not enforced. Get with a ctx
// bounds what a caller waits.
//
// # Receiving
//
// Receive opens a Subscribe stream with max_in_flight =
// MaxOutstandingMessages (default 1000) and max_batch = the same, and
// runs the handler on NumGoroutines (16) goroutines. While a handler holds
// a delivery, its ack deadline is extended every third of the deadline,
// up to MaxExtension (1 h). Acks and nacks are sent together within
// AckDelay (2 ms), or at once when a quarter of max_in_flight is pending.
// MaxOutstandingBytes stops reading the stream while the bodies held
// exceed it.
//
// A stream that breaks is reopened after a backoff and Receive goes on;
// deliveries of the broken stream were handed back by the server, and an
// Ack of one of them is dropped (it will be delivered again). Receive
// returns nil when its ctx ends, after the running handlers returned and
// their acks were sent, or an error for a permanent failure.
//
// # Errors
//
// Errors from qgate keep their gRPC status: status.Code(err) gives the
// code of any error a Publisher or Subscriber returns. Local errors are
// the sentinels ErrStopped, ErrFlowControl, ErrEmptyBody, ErrBadID and
// ErrReceiving; a Get or Publish whose ctx ends returns ctx's error
// unwrapped.
package client
