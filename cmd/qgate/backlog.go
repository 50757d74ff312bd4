package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

const backlogAbout = `Shows what the nsqd nodes of a running qgate hold, per topic and channel,
summed over the nodes: messages queued for the topic (not yet copied to a
channel) and per channel queued (DEPTH), in flight to subscribers, deferred
(delayed sends, nacks with a delay, qgate's standby copies), consumers and
whether it is paused. --nodes adds a table per node. A node that does not
answer is named on stderr.`

const backlogExample = `  qgate backlog
  qgate backlog --topic orders --nodes`

func runBacklog(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("backlog", "qgate backlog [flags]", backlogAbout, backlogExample)
	cf := addClientFlags(fs)
	topic := fs.String("topic", "", "only this topic (default: every topic)")
	perNode := fs.Bool("nodes", false, "also show each node's figures")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of the call")
	if err := fs.parse(e, args); err != nil {
		return err
	}
	conn, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := qgatev1.NewAdminServiceClient(conn).GetBacklog(ctx, &qgatev1.GetBacklogRequest{Topic: *topic})
	if err != nil {
		return err
	}
	for _, n := range resp.GetNodes() {
		if n.GetError() != "" {
			fmt.Fprintf(e.stderr, "qgate backlog: node %s: %s\n", n.GetNode(), n.GetError())
		}
	}
	if err := printBacklog(e.stdout, "", resp.GetTopics()); err != nil {
		return err
	}
	if *perNode {
		for _, n := range resp.GetNodes() {
			if n.GetError() == "" {
				fmt.Fprintln(e.stdout)
				if err := printBacklog(e.stdout, n.GetNode(), n.GetTopics()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// printBacklog writes topics as an aligned table, one row per topic and
// one per channel, under a NODE column when node is set.
func printBacklog(w io.Writer, node string, topics []*qgatev1.TopicBacklog) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "TOPIC\tCHANNEL\tDEPTH\tIN-FLIGHT\tDEFERRED\tCONSUMERS\tPAUSED\tMESSAGES"
	if node != "" {
		head = "NODE\t" + head
		node += "\t"
	}
	fmt.Fprintln(tw, head)
	for _, t := range topics {
		fmt.Fprintf(tw, "%s%s\t-\t%d\t-\t-\t-\t%t\t%d\n", node, t.GetTopic(), t.GetDepth(), t.GetPaused(), t.GetMessageCount())
		for _, c := range t.GetChannels() {
			fmt.Fprintf(tw, "%s%s\t%s\t%d\t%d\t%d\t%d\t%t\t%d\n", node, t.GetTopic(), c.GetChannel(), c.GetDepth(),
				c.GetInFlight(), c.GetDeferred(), c.GetConsumers(), c.GetPaused(), c.GetMessageCount())
		}
	}
	return tw.Flush()
}

const channelAbout = `Pauses, resumes or empties a channel on every nsqd node of a running qgate.
pause stops deliveries (messages keep queueing); resume starts them again;
empty deletes the messages queued for the channel (not those in flight).
Prints each node's answer; exits 1 if a node did not carry it out.`

const channelExample = `  qgate channel pause --topic orders --channel billing
  qgate channel empty --topic orders.dead --channel inspect`

func runChannel(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("channel", "qgate channel pause|resume|empty --topic TOPIC --channel CHANNEL [flags]", channelAbout, channelExample)
	cf := addClientFlags(fs)
	topic := fs.String("topic", "", "the topic (required)")
	channel := fs.String("channel", "", "the channel (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of the call")
	var op string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		op, args = args[0], args[1:]
	}
	if err := fs.parse(e, args); err != nil {
		return err
	}
	if *topic == "" || *channel == "" {
		return fs.usageErr(e, "--topic and --channel are required")
	}
	conn, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := qgatev1.NewAdminServiceClient(conn)
	var nodes []*qgatev1.NodeResult
	switch op {
	case "pause":
		r, err := client.PauseChannel(ctx, &qgatev1.PauseChannelRequest{Topic: *topic, Channel: *channel})
		if err != nil {
			return err
		}
		nodes = r.GetNodes()
	case "resume":
		r, err := client.ResumeChannel(ctx, &qgatev1.ResumeChannelRequest{Topic: *topic, Channel: *channel})
		if err != nil {
			return err
		}
		nodes = r.GetNodes()
	case "empty":
		r, err := client.EmptyChannel(ctx, &qgatev1.EmptyChannelRequest{Topic: *topic, Channel: *channel})
		if err != nil {
			return err
		}
		nodes = r.GetNodes()
	default:
		return fs.usageErr(e, "the operation is pause, resume or empty, before the flags")
	}
	failed := 0
	for _, n := range nodes {
		res := "ok"
		if n.GetError() != "" {
			res, failed = n.GetError(), failed+1
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", n.GetNode(), res)
	}
	if failed > 0 {
		return exitError(1)
	}
	return nil
}

const redriveAbout = `Moves messages from a topic read through one of its channels (typically a
dead-letter topic) back to the topic each was dead-lettered from, or to
--to-topic, keeping bodies and attributes, under a new id (the old one in
the attribute qgate-redriven-id). Each message is written before it is
acknowledged, so a failure leaves it in place; a message redriven twice is
delivered once. Stops after --max messages or when none arrives for
--idle. Prints how many moved.`

const redriveExample = `  qgate redrive --topic orders.dead --channel inspect
  qgate redrive --topic orders.dead --channel inspect --to-topic orders-retry --max 100 --rate 10`

func runRedrive(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("redrive", "qgate redrive --topic TOPIC --channel CHANNEL [flags]", redriveAbout, redriveExample)
	cf := addClientFlags(fs)
	topic := fs.String("topic", "", "the topic to read (required)")
	channel := fs.String("channel", "", "the channel of --topic to read through (required)")
	to := fs.String("to-topic", "", "where the messages go (default: each message's qgate-dead-letter-topic attribute)")
	limit := fs.Uint("max", 1000, "most messages to move (at most 100000)")
	rate := fs.Uint("rate", 0, "most messages per second (0: no limit)")
	idle := fs.Duration("idle", 2*time.Second, "stop when no message arrives for this long (at most 1m)")
	timeout := fs.Duration("timeout", 10*time.Minute, "deadline of the call")
	if err := fs.parse(e, args); err != nil {
		return err
	}
	if *topic == "" || *channel == "" {
		return fs.usageErr(e, "--topic and --channel are required")
	}
	if *limit > 100_000 {
		return fs.usageErr(e, "--max is at most 100000")
	}
	if *rate > 1<<31 {
		return fs.usageErr(e, "--rate is too large")
	}
	conn, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := qgatev1.NewAdminServiceClient(conn).Redrive(ctx, &qgatev1.RedriveRequest{Topic: *topic, Channel: *channel,
		ToTopic: *to, MaxMessages: uint32(*limit), Rate: uint32(*rate), IdleTimeout: durationpb.New(*idle)})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "moved %d, skipped %d\n", r.GetMoved(), r.GetSkipped())
	if r.GetError() != "" {
		fmt.Fprintf(e.stderr, "qgate redrive: ended early: %s\n", r.GetError())
		return exitError(1)
	}
	return nil
}
