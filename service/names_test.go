package service

import (
	"strings"
	"testing"

	nsq "github.com/nsqio/go-nsq"
)

func TestValidName(t *testing.T) {
	good := []string{"a", "t", "a#ephemeral", "A.b_c-d", strings.Repeat("x", 64), strings.Repeat("x", 54) + "#ephemeral", "..", "-"}
	bad := []string{"", "#ephemeral", "a#ephemeral#ephemeral", "a#ephem", "a#", "#", "a b", "a/b", "é", "a\x00", strings.Repeat("x", 65),
		strings.Repeat("x", 55) + "#ephemeral", "a#EPHEMERAL", "a#ephemeralx"}
	for _, s := range good {
		if !ValidName(s) {
			t.Errorf("ValidName(%q) = false, want true", s)
		}
	}
	for _, s := range bad {
		if ValidName(s) {
			t.Errorf("ValidName(%q) = true, want false", s)
		}
	}
}

// FuzzValidName checks the hand-written validator against go-nsq's, which
// implements nsqd's rule on its own (a regexp and the length limit): a name
// ValidName accepts must be one nsqd accepts for a topic and a channel, and
// the other way round.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "a#ephemeral", "#ephemeral", "a#ephemeral#ephemeral", strings.Repeat("x", 65), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		topic, channel := nsq.IsValidTopicName(s), nsq.IsValidChannelName(s)
		if got := ValidName(s); got != topic || got != channel {
			t.Errorf("ValidName(%q) = %v, go-nsq says topic %v, channel %v", s, got, topic, channel)
		}
	})
}
