// Command qgate-chaos injects faults (SIGKILL, SIGTERM, SIGSTOP, restarts)
// into real nsqd processes under load and checks the ledger (package chaos;
// run it with --help for the scenarios and flags). It is a command of its
// own so that the qgate binary does not carry the fault injector.
//
//	go run ./cmd/qgate-chaos --list
//
// Scenario S9 SIGKILLs a qgate, so chaos.Main re-executes this binary as
// `<this binary> chaos` with QGATE_CHAOS_GATEWAY set; Main checks that
// variable before its flags and serves a qgate instead, so the extra
// "chaos" argument is never parsed.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/qgate/qgate/internal/chaos"
)

func main() {
	// Cancelled on SIGINT and SIGTERM, so an interrupted run stops its nsqd
	// processes.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := chaos.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
