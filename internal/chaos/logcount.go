package chaos

import (
	"context"
	"log/slog"
	"sync"
)

// releasedMsg is the pool's log message when it drops the deliveries it
// holds from a node that went down (backends/nsq handback.go). The harness
// counts them: after a SIGKILL nsqd has nothing to requeue, so each is a
// candidate for a lost message.
const releasedMsg = "nsq released deliveries of a down node"

// countingHandler passes records on to next and sums the "count" attribute
// of the pool's release records, whatever next's level.
type countingHandler struct {
	next   slog.Handler
	mu     *sync.Mutex
	counts *int64
	attrs  []slog.Attr
}

func newCountingHandler(next slog.Handler) *countingHandler {
	return &countingHandler{next: next, mu: &sync.Mutex{}, counts: new(int64)}
}

func (h *countingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == releasedMsg {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "count" {
				h.mu.Lock()
				*h.counts += a.Value.Int64()
				h.mu.Unlock()
			}
			return true
		})
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}

// released returns the total count seen so far.
func (h *countingHandler) released() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return *h.counts
}
