// Package nsqd runs real nsqd nodes (github.com/nsqio/nsq v1.3.0) for the
// product, the tests and the tools, in two ways:
//
//   - In this process (Start, StartN, Node): the embedded default of
//     `qgate serve` (three nodes, no install), the benchmark and the fast
//     tests. A Node listens on 127.0.0.1 with ports chosen by the kernel,
//     keeps its queue files in its own data directory and logs through a
//     *slog.Logger; started again on the same data directory, it gets back
//     the topics, channels and queued messages it had persisted.
//   - As a child OS process (StartProcess, Process): the fault injector of
//     the chaos harness and of tests that must kill, freeze or restart a
//     node. A Process can be killed, terminated, frozen, continued and
//     restarted on the same ports and data directory. Its binary is a
//     parameter (ProcessOptions.Binary); BuildBinary builds one from the
//     nsq module version this module requires and caches it in the OS temp
//     directory.
//
// FetchStats reads a node's /stats, whichever way it runs. Every function
// returns plain errors, so a command can use the package as well as a test;
// package nsqdtest wraps it for tests (testing.TB, cleanup). This package
// imports no test code: `qgate serve` links it.
//
// # Signals
//
//	Kill  SIGKILL: nothing is flushed; messages in nsqd's memory are lost.
//	Term  SIGTERM: nsqd flushes its memory and in-flight messages to disk.
//	Stop  SIGSTOP: the process freezes; its sockets stay open, nothing answers.
//	Cont  SIGCONT: a frozen process resumes.
//
// A Process is safe for concurrent use.
package nsqd
