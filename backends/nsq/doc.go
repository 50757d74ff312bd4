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
// nodes in r distinct groups, all at once, and succeeds only when every copy
// was acknowledged. A copy whose attempt fails (connection error, attempt
// timeout) moves to a usable node of a group that holds no copy and is not
// writing one; nsqd's rejection fails the Send at once (ErrRejected). When
// fewer than r groups have a usable node, at the start or after failures,
// the Send fails with backends.ErrUnavailable: copies already written stay
// (they are delivered), but the caller may assume neither that a copy
// exists nor that none does. With r = 2 and durable nsqd settings (see
// Durability), an acknowledged message survives the permanent loss of any
// one node, including what that node had in flight to subscribers.
//
// Copies carry the number of copies in their envelope (Envelope.replicas);
// a subscription deduplicates such messages, and only those, by message id:
//
//   - A copy that arrives while another copy of the same id is held by the
//     subscription (queued or handed out) is parked, kept alive with TOUCH,
//     and shares that copy's outcome: finished with it when it is acked,
//     handed back with it (same delay) when it is nacked, expires or its
//     connection is lost, so that losing either node loses no message.
//   - The id of an acked copy is remembered for Config.DedupWindow (default
//     10m; at most Config.DedupMaxIDs ids, default 100000, oldest forgotten
//     first); a copy that arrives within the window is finished without
//     reaching Receive.
//
// Not deduplicated: copies delivered to different subscriptions (each
// Subscribe call, even on the same channel and gateway, has its own
// window, so two subscribers of one channel may each get a copy); a copy
// that arrives after the window (or after its id was evicted), e.g. when one
// node's backlog is older than the window; a copy that arrives after its
// twin was nacked or handed back (it is delivered, and the twin parked or
// deduplicated when it returns); copies across a gateway restart; and
// messages without the marker: single-copy sends, and raw NSQ bodies
// without qgate's envelope, which have no qgate id.
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
// With both, the failover test loses nothing acknowledged after a kill;
// only the messages the killed node had in flight to subscribers (at most
// their MaxInFlight) are gone with it.
//
// # Goroutines
//
// The pool owns: one health monitor goroutine and one sender goroutine per
// node, one housekeeping goroutine, one goroutine per Watch, and per
// subscription one loop goroutine (connects, expiry of deliveries past their
// deadline, release of deliveries of failed nodes), short-lived connect
// goroutines (one per node per connect round) and, with MaxAttempts, one
// dead-letter goroutine. Close stops them all and waits. go-nsq runs its own
// goroutines per connection; Close waits for every consumer to stop (bounded
// by a frozen node's read timeout) and for every producer's router. go-nsq's
// own re-dial goroutines never start: a consumer whose connection closed is
// stopped before go-nsq would start one.
package nsq
