// Command qgate is a highly available gRPC gateway in front of NSQ.
//
//	qgate [serve] [flags]   run the gateway (the default command)
//	qgate send ...          send messages
//	qgate subscribe ...     print and ack deliveries
//	qgate nodes ...         show the node pool
//
// Run `qgate help` or `qgate <command> --help` for the flags of each. The
// test harnesses are commands of their own, cmd/qgate-bench and
// cmd/qgate-chaos, so this binary carries neither.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one subcommand. run gets the arguments after the command name.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a command may touch of the process, so tests can run
// commands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// ready, if set, is told serve's listen address once it accepts RPCs;
	// metricsReady, its metrics address (if the listener is on).
	ready, metricsReady func(addr string)
	// getenv reads the environment (os.Getenv); nil reads nothing.
	getenv func(string) string
	// reload, if set, asks serve to reload its tokens (SIGHUP in main).
	reload <-chan os.Signal
}

// env returns the environment variable name, "" without an environment.
func (e *env) env(name string) string {
	if e.getenv == nil {
		return ""
	}
	return e.getenv(name)
}

var commands = []command{
	{"serve", "run the gateway (the default when no command is given)", runServe},
	{"send", "send messages to a topic", runSend},
	{"subscribe", "print and ack the messages of a topic's channel", runSubscribe},
	{"nodes", "show the node pool (--watch: follow changes)", runNodes},
	{"backlog", "show what the nodes hold per topic and channel", runBacklog},
	{"channel", "pause, resume or empty a channel on every node", runChannel},
	{"redrive", "move messages from a dead-letter topic back", runRedrive},
}

// errUsage marks an error the command already explained with its usage;
// it exits with status 2 without another message.
var errUsage = errors.New("usage")

// exitError ends the process with a status and no more output.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// SIGHUP reloads serve's tokens. Only serve reads this channel; the
	// client commands then ignore SIGHUP.
	hup := make(chan os.Signal, 1)
	if len(os.Args) < 2 || os.Args[1] == "serve" || strings.HasPrefix(os.Args[1], "-") {
		signal.Notify(hup, syscall.SIGHUP)
	}
	code := run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, reload: hup}, os.Args[1:])
	stop()
	signal.Stop(hup)
	os.Exit(code)
}

// run runs the command named by args[0] (serve if none is named) and
// returns the process's exit status.
func run(ctx context.Context, e *env, args []string) int {
	name := "serve"
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		usage(e.stdout)
		return 0
	}
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		err := c.run(ctx, e, args)
		var exit exitError
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		case errors.As(err, &exit):
			return int(exit)
		}
		fmt.Fprintf(e.stderr, "qgate %s: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(e.stderr, "qgate: unknown command %q\n\n", name)
	usage(e.stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, "qgate is a highly available gRPC gateway in front of NSQ.\n\n")
	fmt.Fprint(w, "Usage: qgate [command] [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'qgate <command> --help' for a command's flags.\n")
}
