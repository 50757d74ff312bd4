// After a drain that ended with acked messages undelivered while the nodes
// still held messages: which of them are still queued on a node (slow, not
// lost) and which no node holds (lost)?

package chaos

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	diskqueue "github.com/nsqio/go-diskqueue"

	"github.com/qgate/qgate/backends/nsq/envelope"
)

// nsqd's on-disk message: an 8-byte timestamp, 2 bytes of attempts and a
// 16-byte id before the body (nsqd/message.go, WriteTo).
const (
	nsqdMsgHeader = 8 + 2 + 16
	// The limits the reader accepts; nsqd refuses messages above its own
	// --max-msg-size long before this.
	queueMaxMsg  = 64 << 20
	queueMaxFile = 100 << 20 // nsqd's default --max-bytes-per-file
)

// classifyLost runs when a drain ended with acked messages undelivered. It
// stops the gateways (nothing consumes any more) and then every node
// cleanly (SIGTERM: nsqd writes what it holds only in memory, in flight
// and deferred messages, to its disk queues as it exits), reads the run's
// topic and channel queues from the nodes' data directories, and returns
// the undelivered ids some node still holds, with where. Those are not
// lost: the next subscriber gets them. The nodes stay stopped.
func (h *Harness) classifyLost(lost []string) (queued map[string][]string, err error) {
	want := make(map[string]bool, len(lost))
	for _, id := range lost {
		want[id] = true
	}
	for i := range h.inst {
		err = errors.Join(err, h.StopGatewayN(i, true))
	}
	queued = make(map[string][]string)
	for i, p := range h.cluster.procs {
		if e := p.Term(); e != nil {
			err = errors.Join(err, fmt.Errorf("chaos: stop %s: %w", h.cluster.names[i], e))
			continue
		}
		ids, e := queuedIDs(p.DataDir(), h.topic)
		err = errors.Join(err, e)
		for _, id := range ids {
			if want[id] && !slices.Contains(queued[id], h.cluster.names[i]) {
				queued[id] = append(queued[id], h.cluster.names[i])
			}
		}
	}
	return queued, err
}

// queuedIDs reads the disk queues of topic and of its channels in an nsqd
// data directory (nsqd not running) and returns the ledger ids (bodies)
// of the messages they hold, with nsqd's own disk queue reader.
func queuedIDs(dir, topic string) ([]string, error) {
	metas, err := filepath.Glob(filepath.Join(dir, "*.diskqueue.meta.dat"))
	if err != nil {
		return nil, err
	}
	var ids []string
	var errs []error
	for _, m := range metas {
		name := strings.TrimSuffix(filepath.Base(m), ".diskqueue.meta.dat")
		if name != topic && !strings.HasPrefix(name, topic+":") {
			continue
		}
		got, err := readQueue(dir, name)
		ids = append(ids, got...)
		errs = append(errs, err)
	}
	return ids, errors.Join(errs...)
}

// readQueue reads every message of one disk queue.
func readQueue(dir, name string) ([]string, error) {
	logf := func(diskqueue.LogLevel, string, ...any) {}
	dq := diskqueue.New(name, dir, queueMaxFile, nsqdMsgHeader, queueMaxMsg+nsqdMsgHeader, 1<<30, time.Hour, logf)
	defer dq.Close()
	var ids []string
	var bad int
	for dq.Depth() > 0 {
		var b []byte
		select {
		case b = <-dq.ReadChan():
		case <-time.After(5 * time.Second):
			return ids, fmt.Errorf("chaos: queue %s: %d messages left unreadable", name, dq.Depth())
		}
		if len(b) < nsqdMsgHeader {
			bad++
			continue
		}
		m, ok := envelope.Decode(b[nsqdMsgHeader:])
		if !ok {
			bad++
			continue
		}
		ids = append(ids, string(m.Body))
	}
	if bad > 0 {
		return ids, fmt.Errorf("chaos: queue %s: %d messages not decodable", name, bad)
	}
	return ids, nil
}

// addQueued re-counts lost after a drain that ended at its time limit with
// undelivered acked messages while the nodes still held messages (a
// backlog still moving): lost is what no node holds; the others are
// reported as still queued. After a drain that ended because deliveries
// stopped although the nodes held messages, a queued message counts as
// lost (no subscriber was getting it), and the queued ones are only
// reported. It is a no-op when nothing is missing.
func (h *Harness) addQueued(ctx context.Context, r *Report, res Result) {
	if res.LostCount() == 0 {
		return
	}
	if left, ok := h.nodesLeft(ctx); ok && left == 0 {
		return // nothing on the nodes: what is missing is lost
	}
	queued, err := h.classifyLost(res.Lost)
	var gone []string
	perNode := make(map[string]int)
	for _, id := range res.Lost {
		nodes, ok := queued[id]
		if !ok {
			gone = append(gone, id)
		}
		for _, n := range nodes {
			perNode[n]++
		}
	}
	var where []string
	for _, n := range h.cluster.names {
		if c := perNode[n]; c > 0 {
			where = append(where, fmt.Sprintf("%s %d", n, c))
		}
	}
	text := fmt.Sprintf("%d of the %d acked messages not delivered in the drain are in the nodes' disk queues (read after a clean stop: %s)",
		len(queued), res.LostCount(), strings.Join(where, ", "))
	if err != nil {
		text += "; reading them: " + err.Error()
	}
	r.AddText("undelivered, still queued", float64(len(queued)), "", text)
	if h.drainStuck {
		return // deliveries had stopped: queued is not an excuse
	}
	for i := range r.Metrics {
		if r.Metrics[i].Name != "lost" {
			continue
		}
		r.Metrics[i].Value = float64(len(gone))
		r.Metrics[i].Text = fmt.Sprintf("%d %s (no node holds them; %d more undelivered but queued)", len(gone), listed(gone), len(queued))
		if err != nil {
			// Unreadable queues may hold the rest: count them all as lost.
			r.Metrics[i].Value = float64(res.LostCount())
			r.Metrics[i].Text = fmt.Sprintf("%d %s (queues not fully read: %v)", res.LostCount(), listed(res.Lost), err)
		}
	}
}
