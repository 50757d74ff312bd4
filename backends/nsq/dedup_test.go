package nsq

import (
	"fmt"
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
