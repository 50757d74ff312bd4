// Command qgate-bench measures what the qgate hop costs against direct
// go-nsq (package internal/bench; run it with --help for the workloads and
// flags). It is a command of its own so that the qgate binary does not
// carry the benchmark.
//
//	go run ./cmd/qgate-bench --help
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/qgate/qgate/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
