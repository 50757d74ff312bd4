package client

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// idSource assigns the ids of messages published without one: a random
// 64-bit prefix chosen once per Publisher, a dash, then a counter in
// base 36 ("3f9c0a1b2c3d4e5f-1a"). Unique within a Publisher, and across
// Publishers and processes unless two random prefixes collide; at most
// 30 bytes, all in qgate's id charset [A-Za-z0-9._:-].
type idSource struct {
	prefix  string
	counter atomic.Uint64
}

func newIDSource() *idSource {
	var raw [8]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	return &idSource{prefix: hex.EncodeToString(raw[:]) + "-"}
}

// validID reports whether id is one qgate takes: at most 64 bytes of
// [A-Za-z0-9._:-] (checked here so that one bad id does not fail the
// other messages of its request).
func validID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// next returns a new id.
func (s *idSource) next() string {
	n := s.counter.Add(1)
	buf := make([]byte, 0, len(s.prefix)+13)
	buf = append(buf, s.prefix...)
	return string(strconv.AppendUint(buf, n, 36))
}
