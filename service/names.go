package service

import (
	"fmt"
	"strings"
)

// ephemeralSuffix marks topics and channels that nsqd deletes when their last
// client leaves.
const ephemeralSuffix = "#ephemeral"

// NamePattern is the rule for topic and channel names (nsqd's), with a
// length of 1 to 64 bytes.
const NamePattern = `^[.a-zA-Z0-9_-]+(#ephemeral)?$`

// ValidName reports whether s is a topic or channel name nsqd accepts:
// 1 to 64 bytes matching NamePattern. It does not use regexp: it runs for
// every request.
func ValidName(s string) bool {
	return nameProblem(s) == ""
}

// nameProblem says what is wrong with a topic or channel name, or "" if
// nothing is.
func nameProblem(s string) string {
	if s == "" {
		return "is required"
	}
	if len(s) > maxNameLen {
		return fmt.Sprintf("is %d bytes long; at most %d are allowed", len(s), maxNameLen)
	}
	base := strings.TrimSuffix(s, ephemeralSuffix)
	if base == "" {
		return fmt.Sprintf("must have a name before %q", ephemeralSuffix)
	}
	for i := 0; i < len(base); i++ {
		if !nameByte(base[i]) {
			return fmt.Sprintf("has %q at byte %d; names match %s", base[i:i+1], i, NamePattern)
		}
	}
	return ""
}

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// deadLetterDefault is the dead-letter topic when the client names none:
// "<topic>.dead", with #ephemeral dropped (a dead-letter topic must outlive
// its subscribers).
func deadLetterDefault(topic string) string {
	return strings.TrimSuffix(topic, ephemeralSuffix) + ".dead"
}
