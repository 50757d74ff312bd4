package backendtest

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
)

// The suite itself runs against real backends from their packages (for NSQ:
// backends/nsq/conformance_test.go); here only its own helpers are checked.

func TestSuiteNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range tests {
		if tc.run == nil || tc.name == "" || seen[tc.name] {
			t.Errorf("bad or duplicate test %q", tc.name)
		}
		seen[tc.name] = true
	}
}

var nsqName = regexp.MustCompile(`^[.a-zA-Z0-9_-]+$`)

func TestNewTopicValid(t *testing.T) {
	t.Run(strings.Repeat("VeryLongSubtestName/", 5)+"with spaces and ünicode", func(t *testing.T) {
		a, b := newTopic(t, ""), newTopic(t, "dead")
		for _, topic := range []string{a, b, a + ".dead"} {
			if !nsqName.MatchString(topic) || len(topic) > 64 {
				t.Errorf("topic %q is not a valid NSQ name of at most 64 characters", topic)
			}
		}
		if a == b {
			t.Errorf("newTopic returned %q twice", a)
		}
	})
}

func TestSameAttrs(t *testing.T) {
	for _, tc := range []struct {
		a, b map[string]string
		want bool
	}{
		{nil, map[string]string{}, true},
		{map[string]string{"k": ""}, map[string]string{}, false},
		{map[string]string{"k": "v"}, map[string]string{"k": "v"}, true},
		{map[string]string{"k": "v"}, map[string]string{"k": "w"}, false},
		{map[string]string{"k": "v"}, map[string]string{"j": "v"}, false},
	} {
		if got := sameAttrs(tc.a, tc.b); got != tc.want {
			t.Errorf("sameAttrs(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNewMsgs(t *testing.T) {
	msgs := newMsgs(50, "p")
	if len(byID(msgs)) != 50 {
		t.Error("newMsgs ids not unique")
	}
	for _, m := range msgs {
		if len(m.Body) == 0 || m.PublishTime.IsZero() || time.Since(m.PublishTime) > time.Minute {
			t.Errorf("bad message %+v", m)
		}
	}
	var _ backends.Message = *msgs[0]
}
