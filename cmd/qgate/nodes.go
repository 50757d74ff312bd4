package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

const nodesAbout = `Shows the nsqd nodes of a running qgate's pool as a table: group, role,
state, since when, last check latency, queued and in-flight messages, whether
the node takes its group's sends now, why it takes none (data_path: ejected for
failed sends, until the time shown; health_check; drain), and the last error. With --watch, it then
prints a line for every change of a node's state until interrupted.`

const nodesExample = `  qgate nodes
  qgate nodes --addr 10.0.0.5:7070 --watch`

func runNodes(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("nodes", "qgate nodes [flags]", nodesAbout, nodesExample)
	cf := addClientFlags(fs)
	watch := fs.Bool("watch", false, "after the table, print every node state change")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of the ListNodes call")
	if err := fs.parse(e, args); err != nil {
		return err
	}
	conn, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := qgatev1.NewAdminServiceClient(conn)

	lctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := client.ListNodes(lctx, &qgatev1.ListNodesRequest{})
	if err != nil {
		return err
	}
	if err := printNodes(e.stdout, resp.GetNodes(), time.Now()); err != nil {
		return err
	}
	if !*watch {
		return nil
	}
	stream, err := client.WatchNodes(ctx, &qgatev1.WatchNodesRequest{})
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return streamErr(ctx, err)
		}
		if ev.GetInitial() {
			continue // the table showed them
		}
		n := ev.GetNode()
		fmt.Fprintf(e.stdout, "%s %s %s -> %s %s %s\n", time.Now().Format(time.TimeOnly),
			n.GetName(), stateName(ev.GetPreviousState()), stateName(n.GetState()), outText(n), n.GetLastError())
	}
}

// printNodes writes nodes as an aligned table.
func printNodes(w io.Writer, nodes []*qgatev1.Node, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tGROUP\tROLE\tSTATE\tSINCE\tCHECK\tDEPTH\tIN-FLIGHT\tACTIVE\tOUT\tLAST ERROR")
	for _, n := range nodes {
		since := "-"
		if n.GetStateSince() != nil {
			since = now.Sub(n.GetStateSince().AsTime()).Round(time.Second).String()
		}
		check := "-"
		if n.GetLastCheck() != nil {
			check = n.GetLastCheckLatency().AsDuration().Round(time.Microsecond).String()
		}
		lastErr := n.GetLastError()
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%t\t%s\t%s\n",
			n.GetName(), n.GetGroup(), roleName(n.GetRole()), stateName(n.GetState()),
			since, check, n.GetDepth(), n.GetInFlight(), n.GetActive(), outText(n), lastErr)
	}
	return tw.Flush()
}

// outText says why n takes no sends ("-" if it does): the reason, and for
// a data-path ejection its end and the ejection count.
func outText(n *qgatev1.Node) string {
	r := n.GetOutReason()
	if r == qgatev1.OutReason_OUT_REASON_UNSPECIFIED {
		return "-"
	}
	s := strings.ToLower(strings.TrimPrefix(r.String(), "OUT_REASON_"))
	if u := n.GetOutUntil(); u != nil {
		s += fmt.Sprintf(" until %s (ejection %d)", u.AsTime().Local().Format(time.TimeOnly), n.GetEjections())
	}
	return s
}

// stateName is NODE_STATE_UP as "up".
func stateName(s qgatev1.NodeState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "NODE_STATE_"))
}

// roleName is NODE_ROLE_PRIMARY as "primary".
func roleName(r qgatev1.NodeRole) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "NODE_ROLE_"))
}
