package nsq

import (
	"context"
	"sync"
	"time"

	"github.com/qgate/qgate/backends"
)

// watcher is one Watch call. Events are coalesced per node, so a slow
// reader never blocks the pool: it sees, per node, the latest status with
// the Previous state of the oldest event it has not read yet.
type watcher struct {
	out  chan backends.NodeEvent
	kick chan struct{} // buffered 1

	mu      sync.Mutex
	pending map[string]backends.NodeEvent
	order   []string // node names in order of their first pending event
}

// push queues ev, replacing a pending event of the same node. It never
// blocks.
func (w *watcher) push(ev backends.NodeEvent) {
	w.mu.Lock()
	if old, ok := w.pending[ev.Node.Name]; ok {
		ev.Previous = old.Previous
	} else {
		w.order = append(w.order, ev.Node.Name)
	}
	w.pending[ev.Node.Name] = ev
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// take returns the pending events in order and clears them.
func (w *watcher) take() []backends.NodeEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	evs := make([]backends.NodeEvent, 0, len(w.order))
	for _, name := range w.order {
		evs = append(evs, w.pending[name])
	}
	clear(w.pending)
	w.order = w.order[:0]
	return evs
}

// Watch returns a channel that first receives the current status of every
// node (with Previous equal to its state), then an event for every change
// of a node's state or Active flag, in order per node. Events of a reader
// that falls behind are coalesced to the latest per node. The channel is
// closed when ctx is done or the pool is closed.
func (p *Pool) Watch(ctx context.Context) <-chan backends.NodeEvent {
	w := &watcher{
		out:     make(chan backends.NodeEvent),
		kick:    make(chan struct{}, 1),
		pending: make(map[string]backends.NodeEvent),
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		close(w.out)
		return w.out
	}
	p.refreshLocked(time.Now())
	for _, g := range p.groups {
		for _, m := range g.members {
			st := p.statusLocked(m)
			w.push(backends.NodeEvent{Node: st, Previous: st.State})
		}
	}
	p.watchers[w] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go p.runWatcher(ctx, w)
	return w.out
}

// runWatcher forwards w's pending events to its reader until ctx is done or
// the pool closes.
func (p *Pool) runWatcher(ctx context.Context, w *watcher) {
	defer p.wg.Done()
	defer close(w.out)
	defer func() {
		p.mu.Lock()
		delete(p.watchers, w)
		p.mu.Unlock()
	}()
	for {
		select {
		case <-w.kick:
		case <-ctx.Done():
			return
		case <-p.ctx.Done():
			return
		}
		for _, ev := range w.take() {
			select {
			case w.out <- ev:
			case <-ctx.Done():
				return
			case <-p.ctx.Done():
				return
			}
		}
	}
}
