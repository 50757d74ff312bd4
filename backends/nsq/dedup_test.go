package nsq

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestIDWindow: ids are remembered for the ttl, at most max of them,
// oldest forgotten first.
func TestIDWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := newIDWindow(time.Minute, 3)
	for i := range 4 {
		w.add(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Second))
	}
	now := t0.Add(5 * time.Second)
	for id, want := range map[string]bool{"0": false, "1": true, "2": true, "3": true, "4": false} {
		if got := w.has(id, now); got != want {
			t.Errorf("has(%s) = %v, want %v", id, got, want)
		}
	}
	if w.has("1", t0.Add(61*time.Second)) {
		t.Error("id 1 remembered past the ttl")
	}
	w.evict(t0.Add(time.Hour))
	if w.len() != 0 {
		t.Errorf("%d ids after the ttl", w.len())
	}
	// Many ids: the order slice is compacted, memory stays bounded.
	w = newIDWindow(time.Minute, 100)
	for i := range 100000 {
		w.add(fmt.Sprint(i), t0)
	}
	if w.len() != 100 || len(w.order)-w.head != 100 || cap(w.order) > 1000 {
		t.Errorf("len %d, order %d (head %d, cap %d)", w.len(), len(w.order), w.head, cap(w.order))
	}
}

// TestIDWindowSince: since returns the ids added from a time on, oldest
// first, without those forgotten (by age or the cap).
func TestIDWindowSince(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := newIDWindow(time.Minute, 3)
	for i, id := range []string{"a", "b", "c", "d"} {
		w.add(id, t0.Add(time.Duration(i)*time.Second))
	}
	if got := w.since(t0); !slices.Equal(got, []string{"b", "c", "d"}) { // a: over the cap
		t.Errorf("since(t0) = %q", got)
	}
	if got := w.since(t0.Add(2 * time.Second)); !slices.Equal(got, []string{"c", "d"}) {
		t.Errorf("since(t0+2s) = %q", got)
	}
	if got := w.since(t0.Add(time.Hour)); len(got) != 0 {
		t.Errorf("since(later) = %q, want none", got)
	}
}
