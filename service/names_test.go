package service

import (
	"regexp"
	"strings"
	"testing"
)

var nameRE = regexp.MustCompile(NamePattern)

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

// FuzzValidName checks the hand-written validator against nsqd's rule: the
// regexp and the length limit.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "a#ephemeral", "#ephemeral", "a#ephemeral#ephemeral", strings.Repeat("x", 65), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) >= 1 && len(s) <= 64 && nameRE.MatchString(s)
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, nsqd's rule says %v", s, got, want)
		}
	})
}
