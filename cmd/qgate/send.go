package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/qgate/qgate/client"
)

const sendAbout = `Sends messages to a topic through a running qgate and prints one message id
per message. The messages are the arguments; with no arguments, the lines of
-f FILE or, without -f, of standard input (one message per line; empty lines
are skipped). Lines are sent in batches of up to --batch messages (or those
that arrive within 10 ms) per request over one stream, several batches in flight; ids are printed in input order. A
send that fails because qgate is unavailable is retried until --timeout. A long
input gets a progress line on stderr every second (--quiet: none).

Every message carries an id, so a retried send is delivered once (within
qgate's dedup window): --id for a single message, --id-prefix P for ids P-1,
P-2, ... in input order (running the same send again is then deduplicated
too), else ids the client assigns. Ids are 1 to 64 bytes of [A-Za-z0-9._:-].`

const sendExample = `  qgate send --topic orders --attr source=cli 'hello' 'world'
  seq 1000 | qgate send --topic numbers --delay 5s
  qgate send --topic orders --id order-1234 '{"total": 12}'
  qgate send --topic numbers --id-prefix import-2026-12-03 -f numbers.txt`

func runSend(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("send", "qgate send --topic TOPIC [flags] [MESSAGE ...]", sendAbout, sendExample)
	cf := addClientFlags(fs)
	topic := fs.String("topic", "", "topic to send to (required)")
	attrs := attrFlag{}
	fs.Var(attrs, "attr", "attribute `key=value` for every message (repeatable)")
	delay := fs.Duration("delay", 0, "deliver the messages after this delay (at most 366 days; 1h if the server's timer topic is off)")
	deliverAt := fs.String("deliver-at", "", "deliver the messages at this `time` (RFC 3339, e.g. 2026-12-24T18:00:00Z); excludes --delay")
	ttl := fs.Duration("ttl", 0, "the messages expire this long after qgate accepts them: not delivered after (1ms to 366 days, longer than --delay; 0: never)")
	file := fs.String("f", "", "read messages from this file, one per line")
	batch := fs.Int("batch", 100, "most messages per request")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of each message, retries included")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr while sending lines")
	id := fs.String("id", "", "the message's id (one message argument only); a retry of it is delivered once")
	idPrefix := fs.String("id-prefix", "", "give the messages ids `P`-1, P-2, ... in input order")
	if err := fs.parse(e, args); err != nil {
		return err
	}
	if *topic == "" {
		return fs.usageErr(e, "--topic is required")
	}
	switch {
	case *id != "" && *idPrefix != "":
		return fs.usageErr(e, "--id and --id-prefix exclude each other")
	case *id != "" && fs.NArg() != 1:
		return fs.usageErr(e, "--id needs exactly one message argument (use --id-prefix for several)")
	}
	if *batch < 1 {
		return fs.usageErr(e, "--batch must be at least 1")
	}
	var at time.Time
	if *deliverAt != "" {
		if *delay != 0 {
			return fs.usageErr(e, "--delay and --deliver-at exclude each other")
		}
		var err error
		if at, err = time.Parse(time.RFC3339Nano, *deliverAt); err != nil {
			return fs.usageErr(e, "--deliver-at: %v (want RFC 3339, e.g. 2026-12-24T18:00:00Z)", err)
		}
	}
	c, err := cf.client(ctx, e)
	if err != nil {
		return err
	}
	defer c.Close()
	s := &sender{
		pub: c.Publisher(*topic, client.PublishSettings{CountThreshold: *batch, DelayThreshold: sendBatchDelay,
			Timeout: *timeout, Delay: *delay}),
		out: e.stdout,
		id:  messageIDs(*id, *idPrefix),
		ttl: *ttl,
		at:  at,
	}
	defer s.pub.Stop()
	if !*quiet {
		s.progress = e.stderr
	}
	if fs.NArg() > 0 {
		for _, m := range fs.Args() {
			s.add(ctx, []byte(m), attrs)
		}
		return s.drain(ctx, 0)
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
	return s.sendLines(ctx, in, attrs)
}

// sender publishes messages and prints their ids in input order.
type sender struct {
	pub     *client.Publisher
	out     io.Writer
	pending []*client.PublishResult // published, id not printed yet
	sent    int
	added   int              // messages published, for id
	id      func(int) string // the id of the nth message (from 1); nil: the client's
	ttl     time.Duration    // each message's TTL; 0: none
	at      time.Time        // each message's due time; zero: none
	// progress, if set, gets a line about once a second while lines are
	// sent, and a last one at the end if any was written.
	progress     io.Writer
	start, shown time.Time
}

// sendBatchDelay is how long a batch waits for more lines: the messages
// given as arguments go in one request, and so do lines that arrive
// within it.
const sendBatchDelay = 10 * time.Millisecond

// progressEvery is how often a long send reports progress.
const progressEvery = time.Second

// maxPending is how many results a send keeps before it waits for the
// oldest: the ids are printed in input order, and memory stays bounded.
const maxPending = 10000

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

func (s *sender) add(ctx context.Context, body []byte, attrs map[string]string) {
	s.added++
	m := &client.Message{Body: body, Attributes: attrs, TTL: s.ttl, DeliverAt: s.at}
	if s.id != nil {
		m.ID = s.id(s.added)
	}
	s.pending = append(s.pending, s.pub.Publish(ctx, m))
}

// messageIDs returns the ids the flags give messages: id for the only
// one, or prefix-n for the nth; nil when neither is set.
func messageIDs(id, prefix string) func(int) string {
	switch {
	case id != "":
		return func(int) string { return id }
	case prefix != "":
		return func(n int) string { return prefix + "-" + strconv.Itoa(n) }
	}
	return nil
}

// drain prints the ids of the oldest results until at most keep are
// pending: it waits for each in turn, and prints the ids that are ready
// beyond that without waiting.
func (s *sender) drain(ctx context.Context, keep int) error {
	for len(s.pending) > 0 {
		r := s.pending[0]
		if len(s.pending) <= keep {
			select {
			case <-r.Ready():
			default:
				return nil
			}
		}
		id, err := r.Get(ctx)
		if err != nil {
			return fmt.Errorf("send (after %d messages sent): %w", s.sent, err)
		}
		fmt.Fprintln(s.out, id)
		s.sent++
		s.pending[0] = nil
		s.pending = s.pending[1:]
	}
	return nil
}

// sendLines sends every non-empty line of in.
func (s *sender) sendLines(ctx context.Context, in io.Reader, attrs map[string]string) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	s.report(false)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		s.add(ctx, append([]byte(nil), sc.Bytes()...), attrs)
		if err := s.drain(ctx, maxPending); err != nil {
			return err
		}
		s.report(false)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	if err := s.drain(ctx, 0); err != nil {
		return err
	}
	s.report(true)
	return nil
}
