package service

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync/atomic"
)

// idLen is the length of a message id: 32 lowercase hex characters.
const idLen = 32

// idSource assigns message ids: a random 8-byte prefix chosen once per
// source, then a counter. Ids are unique within a source, and across sources
// and restarts unless two 64-bit random prefixes collide.
type idSource struct {
	prefix [idLen / 2]byte // hex of the random prefix
	next   atomic.Uint64
}

func newIDSource() *idSource {
	var raw [8]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	s := &idSource{}
	hex.Encode(s.prefix[:], raw[:])
	return s
}

// assign returns n new ids, backed by one string allocation.
func (s *idSource) assign(n int) []string {
	first := s.next.Add(uint64(n)) - uint64(n)
	buf := make([]byte, n*idLen)
	var ctr [8]byte
	for i := range n {
		b := buf[i*idLen : (i+1)*idLen]
		copy(b, s.prefix[:])
		binary.BigEndian.PutUint64(ctr[:], first+uint64(i))
		hex.Encode(b[idLen/2:], ctr[:])
	}
	all := string(buf)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = all[i*idLen : (i+1)*idLen]
	}
	return ids
}
