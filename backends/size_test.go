package backends

import (
	"testing"
)

type plainBackend struct{ Backend }

type sizedBackend struct{ Backend }

func (sizedBackend) MessageSize(m *Message) int { return 1000 + len(m.Body) }
func (sizedBackend) BatchSize(n, total int) int { return 7*n + total }

// TestSizes: a Backend that is a Sizer sizes messages itself; another is
// sized by body and attributes.
func TestSizes(t *testing.T) {
	m := &Message{ID: "id", Body: []byte("body"), Attributes: map[string]string{"k": "vv"}}
	if got := MessageSize(plainBackend{}, m); got != 4+1+2 {
		t.Errorf("plain MessageSize %d, want 7 (body and attributes)", got)
	}
	if got := BatchSize(plainBackend{}, 3, 21); got != 21 {
		t.Errorf("plain BatchSize %d, want 21", got)
	}
	if got := MessageSize(sizedBackend{}, m); got != 1004 {
		t.Errorf("Sizer MessageSize %d, want 1004", got)
	}
	if got := BatchSize(sizedBackend{}, 3, 21); got != 42 {
		t.Errorf("Sizer BatchSize %d, want 42", got)
	}
}
