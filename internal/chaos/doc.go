// Package chaos is qgate's fault-injection harness: it runs real nsqd
// processes behind a qgate, drives publishers and subscribers through the
// gRPC API, injects faults on a schedule (SIGKILL, SIGTERM, SIGSTOP of
// nodes, restarts, qgate stops), heals, drains, and checks an
// acked-versus-delivered ledger the way Jepsen's total-queue checker does.
//
// # The ledger
//
// Publishers record every send attempt with the harness's own message ids
// (carried in the body) and its outcome: acked (OK), failed (the server
// rejected it: nothing written) or unknown (deadline, broken connection,
// UNAVAILABLE: it may or may not have been written). Subscribers record
// every delivery. Check reports:
//
//	lost        acked, never delivered (a broken at-least-once promise)
//	unexpected  delivered, never sent (always a bug)
//	duplicated  delivered and acked more than once (allowed, counted), by
//	            any subscriber of any qgate: a message acked by two
//	            subscribers is a duplicate ("duplicates %" is the share of
//	            acked deliveries beyond the first of their id)
//	recovered   outcome unknown at the client, yet delivered
//
// plus the client-visible send errors and the window they fell in, send
// latency (p50, p99), and from the pool's node events
// (AdminService.WatchNodes) the time to detect a fault and to recover.
//
// Each scenario prints one table and states its promises; a broken promise
// makes Main exit non-zero and the scenario's test fail. No promise holds
// vacuously: every scenario also promises acked ≥ 1, delivered ≥ 1 and a
// balanced ledger (acked messages delivered, counted from the deliveries,
// = acked − lost, counted from the sends), and a scenario that cannot
// check its promise (skipped) fails too. Every report carries the
// machine's load average at the start and end of the run.
//
// # A run
//
// Run starts the scenario's nsqd processes (internal/nsqd) and a qgate:
// in this process (the real nsq.Pool, service and server, with 100 ms health
// checks, 150 ms in S13-S17) or, for scenarios that SIGKILL qgate, as a
// child process; some scenarios run two qgates on the same nodes. Two
// publishers per qgate send one message per request at the set rate, each
// with a unique id in its body (with unary Send; in S13-S17 the second
// uses SendStream); two subscribers per qgate on one channel ack each
// delivery. After a warm-up the scenario's fault schedule runs and heals,
// the load goes on for a moment, then the publishers stop and the harness
// drains until no more deliveries can come: nothing arrived for 1 s, every
// acked message was delivered and the running nodes hold nothing for the
// channel (ready, in flight: an ack that did not land brings it back, or
// deferred: a copy still to come); with messages missing the quiet period
// is the ack deadline + 2 s. While the nodes hold messages it waits as
// long as deliveries come (a backlog on slow, fsyncing nodes), up to 1 min
// (5 min long; past it, up to three times as long while the nodes' queues
// shrink), and gives up after the ack deadline + 10 s without one. It
// never ends at once because lost is 0.
// Finally it reads what the nodes still hold (/stats) and checks the ledger.
// When a drain ended on its time limit with acked messages undelivered and
// messages still on the nodes (a backlog still moving), it stops the
// qgates and then each node cleanly and reads the run's topic and channel
// disk queues (with nsqd's own disk queue reader): an undelivered message
// found there is reported as "undelivered, still queued", not lost; lost
// is what no node holds. After a drain that gave up because deliveries
// had stopped, queued messages stay counted as lost.
//
// # Scenarios
//
//	S1            SIGKILL 1 of 3 under load, restart before the drain (replicas=1):
//	              loss reported (default nsqd, S1-durable, S1-synced)
//	S1-replicas2  SIGKILL 1 of 3, never restarted, replicas=2: lost = 0
//	              (skipped while the nodes do not hold two copies)
//	S2            SIGTERM 1 of 3, restart: lost = 0
//	S3            SIGSTOP 1 of 3, then SIGCONT: lost = 0, detected within 2 s
//	S4            SIGKILL and restart every ~1.5 s: loss reported
//	S5            all nodes down (SIGTERM), back: lost = 0, sends back within 3 s
//	S6            failover: SIGTERM the primary, restart (failback): lost = 0
//	S7            ha: SIGKILL a whole group, restart: loss reported
//	S8            qgate graceful stop mid-stream, restart: lost = 0, stop ≤ 3 s,
//	              handed-back messages redelivered within 2 s of the restart
//	S9            qgate SIGKILL mid-stream, restart: lost = 0, redelivery within
//	              the ack deadline + restart + 2 s
//	S10           a subscriber that never acks: lost = 0, its messages handed back
//	              within 1 s of its stream ending
//	S11           malformed sends in the load: all rejected, zero nsqd
//	              reconnects, zero false failovers, lost = 0
//	S12           deferred sends and delayed nacks, SIGTERM the node holding
//	              them: lost = 0 (early deliveries reported)
//
// S13-S17 reproduce issue 9 (an independent ledger's findings at a44d564)
// with the README's production flags (--mem-queue-size=0 --sync-every=1),
// unary Send and SendStream (200 msg/s short, 400 long), checks every
// 150 ms; a node is killed at the peak of writes: right after half of a
// burst of 100 (200 long) concurrent Sends was acked, the rest in flight.
//
//	S13-cluster-r1    cluster, SIGKILL 1 of 3 at the peak, restart 3 s (5 s
//	                  long) later, replicas 1: loss reported (finding 1)
//	S13-cluster-r2    the same with replicas 2: lost = 0
//	S13-failover-r1   failover (one group of 3), SIGKILL the primary at the
//	                  peak, restart: loss reported (finding 1)
//	S13-failover-r2   the same with replicas 2 (primary + backup): lost = 0
//	S14               SIGKILL 1 of 3 at the peak for good, replicas 2, 2
//	                  qgates × 2 subscribers: lost = 0, duplicates ≤ 1%
//	S15               rolling SIGTERM restarts of every node (3 rounds long),
//	                  each at the peak of a burst, replicas 1: lost = 0
//	                  (finding 2)
//	S16               no fault, replicas 2, 2 qgates × 2 subscribers on one
//	                  channel: lost = 0, duplicates ≤ 0.1% (finding 3)
//	S17               seeded random nemesis, 15 s (5 min long): node
//	                  SIGKILL/restart, SIGSTOP/SIGCONT, qgate SIGKILL/restart
//	                  (2 qgate processes), replicas 2: lost = 0 (--seed
//	                  replays a schedule)
//
// S18 checks issue 13's idempotent sends: every unary Send (publishers'
// and bursts') carries its body's id as the client-chosen message id and
// is made twice, the second a retry whatever the first's outcome, while
// 1 of 3 nodes is SIGKILLed at the peak and restarted; one subscriber.
//
//	S18               replicas 2: lost = 0, duplicates ≤ 1%
//	S18-r1            replicas 1 (where the client ids, not replication,
//	                  deduplicate): duplicates ≤ 1%, loss reported
//
// S19 checks issue 13's expiry: every other message carries a ttl (3 s),
// slow subscribers let a backlog build, and 1 of 3 nodes is frozen for
// 2 ttl + 2 s: lost = 0 for messages without a ttl, none delivered more
// than 1 s after its Send's end + ttl, and some expired and some
// expiring delivered (the run proves something).
//
// S20 checks issue 13's long delays: every message is sent with a delay
// of 3 s (10 s long) through 2 qgate processes whose timer hop is 1 s,
// so each waits on the timer topic in steps; 1 of 3 nodes is SIGTERMed
// and restarted (nsqd writes the deferred messages to disk without their
// timers), then a qgate is SIGKILLed and restarted (a quarter of the
// rate: every step is a disk write on nsqd): lost = 0, none delivered
// more than 10 ms before it was due; lateness and duplicates reported.
//
// S21 checks issue 11's client library across gateway faults: one
// client.Client over both qgate processes (a static list, round-robin), a
// Publisher at 100 msg/s (client ids) and a Subscriber acking at once;
// qgate 2 is SIGKILLed and restarted, then qgate 1 is SIGTERMed and
// restarted: publish errors = 0, lost = 0, no gap of more than 2 s
// between deliveries while the load runs.
//
// Every scenario also promises unexpected = 0, id mismatches = 0 and failed
// but delivered = 0. Short forms take 7-14 s each, S17 about 25 s (go test
// ./internal/chaos/); long forms (Params.Long, qgate chaos --long) hold
// faults for 20-30 s, S17's nemesis 5 minutes.
package chaos
