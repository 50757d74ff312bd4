package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

const sendAbout = `Sends messages to a topic through a running qgate and prints one message id
per message. The messages are the arguments; with no arguments, the lines of
-f FILE or, without -f, of standard input (one message per line; empty lines
are skipped). Lines are sent in batches of --batch messages per Send; a long
input gets a progress line on stderr every second (--quiet: none).`

const sendExample = `  qgate send --topic orders --attr source=cli 'hello' 'world'
  seq 1000 | qgate send --topic numbers --delay 5s`

func runSend(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("send", "qgate send --topic TOPIC [flags] [MESSAGE ...]", sendAbout, sendExample)
	cf := addClientFlags(fs)
	topic := fs.String("topic", "", "topic to send to (required)")
	attrs := attrFlag{}
	fs.Var(attrs, "attr", "attribute `key=value` for every message (repeatable)")
	delay := fs.Duration("delay", 0, "deliver the messages after this delay (at most 1h)")
	file := fs.String("f", "", "read messages from this file, one per line")
	batch := fs.Int("batch", 100, "messages per Send when reading lines")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of each Send")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr while sending lines")
	if err := fs.parse(e, args); err != nil {
		return err
	}
	if *topic == "" {
		return fs.usageErr(e, "--topic is required")
	}
	if *batch < 1 {
		return fs.usageErr(e, "--batch must be at least 1")
	}
	conn, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer conn.Close()
	s := &sender{
		client:  qgatev1.NewQueueServiceClient(conn),
		out:     e.stdout,
		timeout: *timeout,
		req:     &qgatev1.SendRequest{Topic: *topic},
	}
	if !*quiet {
		s.progress = e.stderr
	}
	if *delay > 0 {
		s.req.Delay = durationpb.New(*delay)
	}
	if fs.NArg() > 0 {
		for _, m := range fs.Args() {
			s.add([]byte(m), attrs)
		}
		return s.flush(ctx)
	}
	in := e.stdin
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	return s.sendLines(ctx, in, attrs, *batch)
}

// sender batches messages into Send requests and prints the ids.
type sender struct {
	client  qgatev1.QueueServiceClient
	out     io.Writer
	timeout time.Duration
	req     *qgatev1.SendRequest // topic and delay set; messages pending
	sent    int
	// progress, if set, gets a line about once a second while lines are
	// sent, and a last one at the end if any was written.
	progress     io.Writer
	start, shown time.Time
}

// progressEvery is how often a long send reports progress.
const progressEvery = time.Second

// report writes a progress line if one is due (or, with final, if any was
// written before).
func (s *sender) report(final bool) {
	if s.progress == nil {
		return
	}
	now := time.Now()
	if s.start.IsZero() {
		s.start, s.shown = now, now
		return
	}
	if final && s.shown.Equal(s.start) || !final && now.Sub(s.shown) < progressEvery {
		return
	}
	s.shown = now
	rate := float64(s.sent) / max(now.Sub(s.start).Seconds(), 1e-9)
	fmt.Fprintf(s.progress, "qgate send: %d messages sent (%.0f/s)\n", s.sent, rate)
}

func (s *sender) add(body []byte, attrs map[string]string) {
	s.req.Messages = append(s.req.Messages, &qgatev1.Message{Body: body, Attributes: attrs})
}

func (s *sender) flush(ctx context.Context) error {
	if len(s.req.Messages) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.client.Send(ctx, s.req)
	if err != nil {
		return fmt.Errorf("send (after %d messages sent): %w", s.sent, err)
	}
	for _, id := range resp.GetMessageIds() {
		fmt.Fprintln(s.out, id)
	}
	s.sent += len(s.req.Messages)
	s.req.Messages = nil
	return nil
}

// sendLines sends every non-empty line of in, batch lines per Send.
func (s *sender) sendLines(ctx context.Context, in io.Reader, attrs map[string]string, batch int) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	s.report(false)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		s.add(append([]byte(nil), sc.Bytes()...), attrs)
		if len(s.req.Messages) >= batch {
			if err := s.flush(ctx); err != nil {
				return err
			}
			s.report(false)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	if err := s.flush(ctx); err != nil {
		return err
	}
	s.report(true)
	return nil
}
