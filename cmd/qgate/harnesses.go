package main

import (
	"context"

	"github.com/qgate/qgate/chaos"
	"github.com/qgate/qgate/internal/bench"
)

// runBench runs the benchmark of internal/bench (its own flags and --help).
func runBench(ctx context.Context, e *env, args []string) error {
	if code := bench.Main(ctx, args, e.stdout, e.stderr); code != 0 {
		return exitError(code)
	}
	return nil
}

// runChaos runs the fault-injection harness of package chaos (its own
// flags and --help). The harness also re-executes this command as a
// gateway child.
func runChaos(ctx context.Context, e *env, args []string) error {
	if code := chaos.Main(ctx, args, e.stdout, e.stderr); code != 0 {
		return exitError(code)
	}
	return nil
}
