package nsq

import "time"

// idWindow remembers ids for a while: at most max of them, none for longer
// than ttl, oldest forgotten first. Not safe for concurrent use (the
// subscription's mutex guards it).
type idWindow struct {
	ttl   time.Duration
	max   int
	ids   map[string]time.Time
	order []idEntry // in insertion (= time) order from head
	head  int
}

type idEntry struct {
	id string
	at time.Time
}

func newIDWindow(ttl time.Duration, max int) *idWindow {
	return &idWindow{ttl: ttl, max: max, ids: make(map[string]time.Time)}
}

// has reports whether id was added less than ttl before now.
func (w *idWindow) has(id string, now time.Time) bool {
	at, ok := w.ids[id]
	return ok && now.Sub(at) < w.ttl
}

// add remembers id from now on.
func (w *idWindow) add(id string, now time.Time) {
	if _, ok := w.ids[id]; ok {
		return
	}
	w.ids[id] = now
	w.order = append(w.order, idEntry{id, now})
	w.evict(now)
}

// evict forgets ids past ttl or beyond max, and compacts the order slice.
func (w *idWindow) evict(now time.Time) {
	for w.head < len(w.order) && (len(w.ids) > w.max || now.Sub(w.order[w.head].at) >= w.ttl) {
		delete(w.ids, w.order[w.head].id)
		w.order[w.head] = idEntry{}
		w.head++
	}
	if w.head > 64 && w.head*2 > len(w.order) {
		w.order = append(w.order[:0], w.order[w.head:]...)
		w.head = 0
	}
	if len(w.order) == 0 && cap(w.order) > 1024 {
		w.order, w.ids = nil, make(map[string]time.Time) // give memory back when idle
	}
}

// len returns how many ids are remembered.
// since returns the ids added at or after t (and still remembered), the
// oldest first.
func (w *idWindow) since(t time.Time) []string {
	i := len(w.order)
	for i > w.head && !w.order[i-1].at.Before(t) {
		i--
	}
	out := make([]string, 0, len(w.order)-i)
	for _, e := range w.order[i:] {
		if _, ok := w.ids[e.id]; ok {
			out = append(out, e.id)
		}
	}
	return out
}

func (w *idWindow) len() int { return len(w.ids) }
