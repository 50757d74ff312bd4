// Package nsq is qgate's NSQ backend: a Pool of nsqd nodes, health-checked,
// with failover, spreading and failback, behind the backends.Backend
// interface.
//
// # Model
//
// A pool is a list of groups; a group is an ordered list of members (the
// first is the primary). The three modes are presets of that model (see
// GroupsForMode): cluster is one group per node, failover is one group, ha is
// several groups of a primary with backups.
//
// # Routing
//
// Every node has a health Monitor (package health) that combines two
// signals with thresholds of their own: active /ping checks with fall/rise,
// and the data path: Config.Eject.Consecutive sends in a row that fail at
// the connection level or time out eject the node for a time that grows
// with each consecutive ejection (Envoy's outlier detection), which good
// pings do not shorten (unless the checks fail too: the node is then down
// as a dead node is, and back with Rise passed checks). No node is ejected
// once Config.Eject.MaxEjectionPercent of the nodes (at least one) are down,
// and never the last usable one.
// A node is usable when neither signal has it Down (or it is still
// Unknown) and it is not draining; NodeStatus.OutReason says why it is not.
//
// Within a group one member is active. The active member keeps the group
// while it is usable, unless a higher-priority member has been Up for at
// least Config.FailbackHold: then sends fail back to it, and a flapping
// primary cannot take the traffic back faster than that. When the active
// member stops being usable, the group fails over at once to its
// highest-priority usable member. A fresh pool starts on the primaries;
// after a total outage the first member back takes the traffic.
//
// A Send goes to the active member of one group, chosen round-robin over the
// groups that have one, so sends spread over groups and spill to the
// remaining groups when a whole group is down. When the attempt fails with a
// connection-level error, does not answer within its attempt timeout (10×
// the node's recent p99, within [Config.AttemptTimeoutMin,
// Config.AttemptTimeout]), or its node is marked Down while it waits, the
// Send is retried at once on the next group's active member, then on any
// other usable node, within the call's deadline. The attempt timeout
// applies only while another node is usable: the last node is given the
// rest of the call's deadline rather than ejected. The
// caller sees an error only when no node could take the write:
// backends.ErrUnavailable (wrapped) when none was usable or all failed, the
// context's error when its deadline passed, or ErrRejected when nsqd refused
// the request itself (a bad topic or an oversized body): such a request is
// not retried and does not mark the node down.
//
// # Delivery semantics
//
// At least once. An attempt that times out has an unknown outcome: nsqd may
// still write it (a frozen node that is thawed processes what was buffered
// in its socket), and the retry on another node then makes a duplicate.
// Likewise a batch that fails half-way is retried whole.
//
// A batch without delay is written within one MPUB (one PUB for a single
// message), so it lands on one node atomically. nsqd has no deferred MPUB: a
// delayed batch is one DPUB per message, pipelined on the same connection,
// and may be partly written when it fails.
//
// # Coalesced sends
//
// Concurrent Sends without delay to the same node and topic share MPUBs
// (group commit): each node keeps a queue per topic, and its sender writes
// everything queued for a topic as one MPUB (at most 1000 messages and
// 1 MiB) as soon as no MPUB of that topic is outstanding on the node. A lone
// Send goes out at once; no timer is involved. The callers of one MPUB
// succeed or fail together, and each then retries on its own as described
// above; if nsqd rejects a shared MPUB, its callers retry alone so that
// only a request at fault sees ErrRejected. A caller whose deadline passes
// before the sender took its messages is removed from the queue and
// nothing is written for it; after that, its outcome is unknown (the MPUB
// may still land). No lock is held across I/O and no goroutine is started
// per message.
//
// # Replicated sends
//
// With SendOptions.Replicas = r > 1 a Send writes a copy of the batch to r
// distinct nodes, all at once, and succeeds only when every copy was
// acknowledged. Nodes of distinct groups come first (the active member of
// each); when fewer groups than r have one (failover mode has one group)
// the other copies go to other usable members, in priority order: in
// failover mode the active member and the next usable backup. A copy whose
// attempt fails (connection error, attempt timeout) moves to a usable node
// that holds no copy, preferring a group that holds none; nsqd's rejection
// fails the Send at once (ErrRejected). When too few nodes are usable, at
// the start or after failures, the Send fails with backends.ErrUnavailable
// (Config.MinReplicas may allow fewer copies at the start): copies already
// written stay (they are delivered), but the caller may assume neither that
// a copy exists nor that none does. With r = 2 an acknowledged message
// survives the loss of any one node, including what nsqd held only in
// memory (in flight, read ahead from its disk queue, deferred), which a
// SIGKILL loses whatever its flags.
//
// # One delivery per message
//
// The first copy is an ordinary message. The others are standbys: their
// envelope says so and carries not_before = send time (+ delay) +
// Config.StandbyDelay (default 30s). They are written like any message
// (coalesced MPUBs); the subscription that first receives one before its
// not_before defers it (REQ) until then, so a standby surfaces on its
// channel only StandbyDelay after the send. Ids of replicated messages
// acked on a channel are kept per topic and channel for
// Config.DedupWindow (default 10m; at most Config.DedupMaxIDs per channel,
// oldest forgotten first), by the pool (every subscription of the channel
// on this gateway) and, with Config.AckTopic, by every gateway sharing the
// nodes: each publishes its acked ids (AckRecord, batched within 5ms) to
// the ack topic and reads everyone's on a channel of its own. A copy whose
// id is known acked on its channel when it arrives is finished without
// being delivered. So in the normal case (the first copy acked within
// StandbyDelay) each subscriber group of a channel gets one delivery,
// whichever gateway and subscriber took the first copy.
//
// A copy is finished only when its message is known acked (or
// dead-lettered), never because its twin is merely held. A delivery still
// unsettled a quarter of StandbyDelay after its send, extended, or nacked with a
// delay records a hold of its id until its deadline (the nack's delay),
// shared like acks; a copy that arrives while its twin is held is deferred
// until the hold ends, so a nack's delay is honoured and a slow consumer
// gets no duplicate. A standby that surfaces neither acked nor held is
// delivered (its first copy was lost with its node, or is backlogged), so
// losing any one node loses nothing. Within one subscription, a copy that arrives while
// another copy of its id is held is parked (kept alive with TOUCH) and
// shares that copy's outcome. An Ack of a replicated delivery whose
// connection was lost after it was handed out (its node went down) is
// accepted: there is nothing to FIN, but the id counts as acked, so the
// other copy and nsqd's redelivery of this one are finished on arrival;
// parked copies of such a delivery come back only after its ack deadline,
// for the same reason.
//
// A copy that arrives a quarter of StandbyDelay or more after its send (a
// backlog: its twin may be live too) claims its id at once (a hold, shared
// with its arrival time as since). Two gateways may each claim a twin at
// the same moment, before either claim has reached the other; so while
// other instances are heard on the ack topic (they write a heartbeat
// record every 2s), a claiming copy waits before it is delivered: twice
// the measured delay of the ack topic, at least Config.ClaimSettle
// (250ms), at most StandbyDelay/8. Then both claims are known to both
// gateways, and both keep the one that ranks first (earlier since, then
// smaller instance id): that copy is delivered, the other is deferred
// until the winner's hold ends (or finished, if acked meanwhile).
//
// Not deduplicated: copies arriving after the window (or after their id
// was evicted), e.g. when a channel's backlog on one node is older than
// the window; twins claimed at two gateways when the ack topic's delay
// exceeds the settle wait (bounded by StandbyDelay/8); ack records lost
// (the ack topic's write failed, or the reader fell behind: at most a
// duplicate, never a loss); ordinary redeliveries (nack, expired deadline,
// ended stream), which come with attempt + 1; and messages without the
// marker: single-copy sends without a client id, and raw NSQ bodies
// without qgate's envelope.
// A standby's early arrival is not counted as an attempt.
//
// Messages with a client-chosen id (backends.Message.ClientID, the
// envelope's client_id) take part in all of the above whatever their
// replicas, with one difference: another send of the id (a client's
// retry) may be live at any moment, not only in a backlog, so every copy
// claims a hold of its id when it arrives, atomically within the pool and
// shared on the ack bus; a copy arriving at another subscription meanwhile
// is deferred until the hold ends, and is finished on its next arrival if
// the id was acked by then. Only a client-id copy in a backlog waits the
// claim's settle time (Config.ClaimSettle); a fresh one is delivered at
// once, or every such message would wait it. Two sends of one id that reach subscriptions
// of two gateways before either gateway's hold reaches the other (a few
// milliseconds, the ack bus's batching and an NSQ round trip) are both
// delivered; so are sends more than DedupWindow apart (or past
// DedupMaxIDs).
//
// A delayed message carries its due time as not_before too: nsqd drops a
// deferred message's timer when it writes it to disk (--mem-queue-size=0),
// and a subscription that receives it early defers it again.
//
// # Long delays
//
// nsqd defers a message (DPUB, REQ) for at most its --max-req-timeout
// (Config.TimerHop, 1h by default). A Send with a longer delay (up to
// MaxLongDelay, 366 days) needs Config.TimerTopic (qgate serve:
// qgate.timer): each copy's envelope, its not_before set to its due time,
// gets the destination topic appended (envelope.AppendTimerTopic) and is
// written to the timer topic without deferral, on the node the copy would
// have gone to. Every pool reads the timer topic on TimerChannel, shared
// by all instances (timerMover). As with any message that arrives before
// its not_before, the subscription defers it (REQ) by at most TimerHop,
// again and again, until it is due; the mover then writes the envelope to
// its topic on the same node (so the copies of a replicated send stay on
// distinct nodes) and only then finishes the timer message. Its topic's
// subscriptions see a fresh message, attempt 1, no earlier than its due
// time.
//
// What it costs and risks: every step is a REQ, and the message's return
// from nsqd's deferred queue is a disk write (an fsync with
// --sync-every=1), once per TimerHop per waiting copy. While deferred, a
// timer message is in nsqd's memory: a graceful exit of nsqd writes it to
// disk (it comes back at once and is deferred again); a SIGKILL loses the
// node's copy (replicas keep the others). A mover that dies between its
// two writes leaves the message to be written again: a duplicate, which
// subscriptions drop for replicated and client-id messages. A message
// waits while no qgate instance runs, and is delivered when one does.
//
// # Subscriptions
//
// A subscription reads from every node of every group (primaries, backups
// and drained nodes alike), because messages can live on any of them:
// nothing written to a backup during an outage is stranded after failback.
// It runs one go-nsq Consumer per node, each with the subscription's
// MaxInFlight (a single Consumer would split MaxInFlight over its
// connections, starving a node that holds most of the messages); Receive
// enforces MaxInFlight over all of them, and up to MaxInFlight per node may
// wait in the subscription's queue, kept alive with TOUCH. A delivery's ack
// deadline starts when Receive returns it.
//
// A node that comes back Up is reconnected within about one check interval
// (go-nsq alone would wait 60s). A node going Down does not touch its
// deliveries: a failed health check or a data-path ejection says nothing of
// the consumer connection, which keeps delivering and taking acks. When a
// consumer connection is actually gone (or its node left the pool), the
// deliveries it handed out are released: nsqd requeues them, and acking
// them returns backends.ErrUnknownDelivery. Close first sets RDY 0
// and waits until nsqd's output is quiet (at most 500ms), then stops
// reading (CLS) and hands back every unsettled delivery at once (REQ 0), so
// no message is left in flight to a closed connection until nsqd's timeout.
// A node's consumer lives for one connection: when the connection closes it
// is stopped and the next connect round makes a new one.
//
// Messages past SubscribeOptions.MaxAttempts are written to the dead-letter
// topic through the pool's own Send, with the attributes
// AttrDeadLetterAttempts and AttrDeadLetterReason added, and then finished;
// if that write fails they are requeued with a delay, never dropped.
//
// # Durability
//
// nsqd keeps messages in memory (up to --mem-queue-size per topic and
// channel) and messages in flight to consumers always in memory: SIGKILL
// loses them. Run nsqd with --mem-queue-size=0 so that what it acknowledges
// is on disk, and with --sync-every=1: nsqd 1.3.0 restarted after SIGKILL
// resumes writing its disk queue at the position of its last metadata sync,
// overwriting (and then discarding as corrupt) what was written after it.
// Even with both, a SIGKILLed nsqd loses what it had taken off its disk
// queue into memory: messages in flight to consumers, on their way to one,
// and deferred (REQ'd or DPUB'd) messages; a SIGTERMed one was seen to lose
// a message it flushed to disk too (issue 9). Only copies on other nodes
// (Replicas >= 2) cover those.
//
// # Goroutines
//
// The pool owns: one health monitor goroutine and one sender goroutine per
// node, one housekeeping goroutine, one goroutine per Watch, and per
// subscription one loop goroutine (connects, expiry of deliveries past their
// deadline, release of deliveries of failed nodes), short-lived connect
// goroutines (one per node per connect round) and, with MaxAttempts, one
// dead-letter goroutine; with Config.AckTopic, the ack bus's publisher and
// reader goroutines (the reader runs a subscription of its own and the
// sweep of gone instances' channels). Close stops them all and waits. go-nsq runs its own
// goroutines per connection; Close waits for every consumer to stop (bounded
// by a frozen node's read timeout) and for every producer's router. go-nsq's
// own re-dial goroutines never start: a consumer whose connection closed is
// stopped before go-nsq would start one.
package nsq
