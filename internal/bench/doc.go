// Package bench is the engine of `qgate bench`: a side-by-side benchmark of
// publishing and consuming through qgate (side B) against doing the same
// with go-nsq straight to the same nsqd nodes (side A).
//
// # Method
//
// Each workload runs Config.Rounds rounds; a round runs side A, then side
// B, each on a fresh topic that is deleted afterwards, so drift of the
// machine during a run hits both sides alike. Send workloads run a warm-up
// and then a measured interval; only requests that start and end inside it
// count. Drain workloads prepare a backlog (untimed) and time one
// subscriber reading all of it; qgate's subscriber sets open.max_batch to
// its max in flight (Config.SubBatch), so one response carries what is
// ready, as a direct Consumer reads what its connection has buffered. Latency is per request (a whole batch for
// batched sends), kept in a log-bucketed histogram with about 3% precision.
// CPU time is getrusage of this process (plus an external qgate's with
// Config.QgatePID): with the default in-process nodes and qgate it counts
// the load generator, qgate and nsqd together for both sides, so the
// difference B-A is what the qgate hop costs.
//
// The memory mode sends at a steady rate through qgate while one
// subscriber reads and never acks and another never reads, and samples the
// resident set size.
//
// Main is the command line; Run is the engine for programs and tests.
package bench
