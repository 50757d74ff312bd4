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
//	duplicated  delivered and acked more than once (allowed, counted)
//	recovered   outcome unknown at the client, yet delivered
//
// plus the client-visible send errors and the window they fell in, send
// latency (p50, p99), and from the pool's node events
// (AdminService.WatchNodes) the time to detect a fault and to recover.
//
// Each scenario prints one table and states its promises; a broken promise
// makes Main exit non-zero and the scenario's test fail.
package chaos
