package auth

import (
	"strings"
	"testing"
)

func TestPatterns(t *testing.T) {
	tests := []struct {
		pattern, topic string
		want           bool
	}{
		{"orders", "orders", true},
		{"orders", "orders_secret", false},
		{"orders", "my_orders", false},
		{"orders", "orders.eu", false},
		{"orders.*", "orders.eu", true},
		{"orders.*", "orders.eu.west", true},
		{"orders.*", "orders", false},
		{"orders.*", "ordersXeu", false},
		{"*", "anything", true},
		{"*", "x#ephemeral", true},
		{"orders?", "orders1", true},
		{"orders[0-9]", "ordersa", false},
	}
	for _, tt := range tests {
		if got := matchAny([]string{tt.pattern}, tt.topic); got != tt.want {
			t.Errorf("%q matches %q: got %v, want %v", tt.pattern, tt.topic, got, tt.want)
		}
	}
}

func TestNewStoreErrors(t *testing.T) {
	const secret = "0123456789abcdef"
	tests := []struct {
		name   string
		tokens []Token
		want   string
	}{
		{"no name", []Token{{Secret: secret}}, "name is empty"},
		{"short secret", []Token{{Name: "a", Secret: "short"}}, "shorter than"},
		{"same name", []Token{{Name: "a", Secret: secret}, {Name: "a", Secret: secret + "x"}}, "name is used twice"},
		{"same secret", []Token{{Name: "a", Secret: secret}, {Name: "b", Secret: secret}}, "used by another token"},
		{"bad pattern", []Token{{Name: "a", Secret: secret, Send: []string{"orders["}}}, `send: pattern "orders["`},
		{"empty pattern", []Token{{Name: "a", Secret: secret, Subscribe: []string{""}}}, "subscribe: empty pattern"},
	}
	for _, tt := range tests {
		_, err := NewStore(tt.tokens)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestLookupAndFromEnv(t *testing.T) {
	env := map[string]string{EnvToken: "env-secret-0123456789"}
	tok, ok := FromEnv(func(k string) string { return env[k] })
	if !ok {
		t.Fatal("FromEnv: not set")
	}
	s, err := NewStore([]Token{tok})
	if err != nil {
		t.Fatal(err)
	}
	p, ok := s.Lookup("env-secret-0123456789")
	if !ok || p.Name() != EnvTokenName || !p.CanSend("a") || !p.CanSubscribe("b.c") || !p.CanAdmin() {
		t.Errorf("env token: got %+v %v, want every grant", p, ok)
	}
	if _, ok := s.Lookup("env-secret-012345678"); ok {
		t.Error("a prefix of the secret was accepted")
	}
	if _, ok := FromEnv(func(string) string { return "" }); ok {
		t.Error("FromEnv with the variable unset: got a token")
	}
}
