package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"path"
	"sync/atomic"
)

// EnvToken is the environment variable that holds a single secret granting
// everything. See FromEnv.
const EnvToken = "QGATE_TOKEN"

// EnvTokenName is the Name of the token FromEnv builds.
const EnvTokenName = "env"

// Token is one bearer token and what it may do.
type Token struct {
	// Name identifies the token in logs, metrics and limits; unique in a
	// Store. It is not secret.
	Name string
	// Secret is what the client sends ("authorization: Bearer <secret>").
	// Unique in a Store; at least 16 bytes.
	Secret string
	// Send lists the topic patterns the token may send to.
	Send []string
	// Subscribe lists the topic patterns the token may subscribe to.
	Subscribe []string
	// Admin grants AdminService (list, watch, drain nodes).
	Admin bool
}

// MinSecretLen is the shortest accepted secret.
const MinSecretLen = 16

// FromEnv returns the token whose secret is getenv(EnvToken), granting send
// and subscribe on every topic and admin, and whether the variable was set
// (non-empty). Pass os.Getenv.
func FromEnv(getenv func(string) string) (Token, bool) {
	secret := getenv(EnvToken)
	if secret == "" {
		return Token{}, false
	}
	return Token{Name: EnvTokenName, Secret: secret, Send: []string{"*"}, Subscribe: []string{"*"}, Admin: true}, true
}

// Principal is an authenticated caller: the token's name and grants.
// Safe for concurrent use.
type Principal struct {
	name      string
	digest    [sha256.Size]byte
	send      []string
	subscribe []string
	admin     bool
}

// Name is the token's name.
func (p *Principal) Name() string { return p.name }

// CanSend reports whether the token may send to topic.
func (p *Principal) CanSend(topic string) bool { return matchAny(p.send, topic) }

// CanSubscribe reports whether the token may subscribe to topic.
func (p *Principal) CanSubscribe(topic string) bool { return matchAny(p.subscribe, topic) }

// CanAdmin reports whether the token may use AdminService.
func (p *Principal) CanAdmin() bool { return p.admin }

// matchAny reports whether a pattern matches the whole of topic.
func matchAny(patterns []string, topic string) bool {
	for _, pat := range patterns {
		// Patterns were checked by NewStore; path.Match anchors at both ends.
		if ok, _ := path.Match(pat, topic); ok {
			return true
		}
	}
	return false
}

// snapshot is one immutable token set.
type snapshot struct {
	principals []*Principal
	changed    chan struct{} // closed when the snapshot is replaced
}

// Store is a replaceable set of tokens. Safe for concurrent use.
type Store struct {
	cur atomic.Pointer[snapshot]
}

// NewStore checks tokens and returns a Store holding them. An empty Store
// authenticates nobody.
func NewStore(tokens []Token) (*Store, error) {
	snap, err := newSnapshot(tokens)
	if err != nil {
		return nil, err
	}
	s := &Store{}
	s.cur.Store(snap)
	return s, nil
}

// Replace swaps the token set for tokens (a config reload). Calls that start
// afterwards see the new set; open streams are re-checked at once (see the
// package doc). On error the old set stays.
func (s *Store) Replace(tokens []Token) error {
	snap, err := newSnapshot(tokens)
	if err != nil {
		return err
	}
	old := s.cur.Swap(snap)
	close(old.changed)
	return nil
}

// Len is the number of tokens.
func (s *Store) Len() int { return len(s.cur.Load().principals) }

// Lookup returns the principal whose secret is secret. It compares secret
// with every token in constant time.
func (s *Store) Lookup(secret string) (*Principal, bool) {
	p, _ := s.lookup(secret)
	return p, p != nil
}

// lookup is Lookup that also returns the snapshot it searched, whose
// changed channel tells when to look again.
func (s *Store) lookup(secret string) (*Principal, *snapshot) {
	snap := s.cur.Load()
	d := sha256.Sum256([]byte(secret))
	var found *Principal
	for _, p := range snap.principals {
		if subtle.ConstantTimeCompare(d[:], p.digest[:]) == 1 {
			found = p
		}
	}
	return found, snap
}

func newSnapshot(tokens []Token) (*snapshot, error) {
	var errs []error
	names := make(map[string]bool)
	digests := make(map[[sha256.Size]byte]bool)
	snap := &snapshot{changed: make(chan struct{})}
	for i, t := range tokens {
		field := fmt.Sprintf("tokens[%d]", i)
		if t.Name != "" {
			field = fmt.Sprintf("tokens[%d] (%s)", i, t.Name)
		}
		p := &Principal{name: t.Name, digest: sha256.Sum256([]byte(t.Secret)), admin: t.Admin}
		switch {
		case t.Name == "":
			errs = append(errs, fmt.Errorf("%s: name is empty", field))
		case names[t.Name]:
			errs = append(errs, fmt.Errorf("%s: name is used twice", field))
		}
		names[t.Name] = true
		switch {
		case len(t.Secret) < MinSecretLen:
			errs = append(errs, fmt.Errorf("%s: secret is shorter than %d bytes", field, MinSecretLen))
		case digests[p.digest]:
			errs = append(errs, fmt.Errorf("%s: secret is used by another token", field))
		}
		digests[p.digest] = true
		var err error
		if p.send, err = checkPatterns(t.Send); err != nil {
			errs = append(errs, fmt.Errorf("%s: send: %w", field, err))
		}
		if p.subscribe, err = checkPatterns(t.Subscribe); err != nil {
			errs = append(errs, fmt.Errorf("%s: subscribe: %w", field, err))
		}
		snap.principals = append(snap.principals, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return snap, nil
}

// checkPatterns validates patterns and returns a copy.
func checkPatterns(patterns []string) ([]string, error) {
	for _, pat := range patterns {
		if pat == "" {
			return nil, errors.New("empty pattern")
		}
		if _, err := path.Match(pat, ""); err != nil {
			return nil, fmt.Errorf("pattern %q: %w", pat, err)
		}
	}
	return append([]string(nil), patterns...), nil
}
