package config

import (
	"fmt"
	"strings"
)

// tomlLines maps the path of every key of a valid TOML document, in the
// decoder's notation (groups[1].members[0].tcp), to the line it is written
// on. The TOML library keeps key positions to itself, so this is a small
// scanner of its own: it follows [table] and [[array]] headers, dotted keys,
// inline tables and arrays (of inline tables), and skips strings. It only
// runs on input the TOML parser accepted.
func tomlLines(data []byte) map[string]int {
	s := &tomlScanner{src: string(data), line: 1, lines: map[string]int{}, counts: map[string]int{}}
	s.document()
	return s.lines
}

type tomlScanner struct {
	src    string
	pos    int
	line   int
	lines  map[string]int
	counts map[string]int // array-of-tables path -> elements so far
}

func (s *tomlScanner) eof() bool { return s.pos >= len(s.src) }

func (s *tomlScanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.pos]
}

func (s *tomlScanner) advance() {
	if !s.eof() {
		if s.src[s.pos] == '\n' {
			s.line++
		}
		s.pos++
	}
}

// skip skips blanks, and newlines and comments if nl.
func (s *tomlScanner) skip(nl bool) {
	for !s.eof() {
		switch c := s.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			s.advance()
		case c == '\n' && nl:
			s.advance()
		case c == '#' && nl:
			for !s.eof() && s.peek() != '\n' {
				s.advance()
			}
		default:
			return
		}
	}
}

func (s *tomlScanner) skipLine() {
	for !s.eof() && s.peek() != '\n' {
		s.advance()
	}
}

func (s *tomlScanner) record(path string, line int) {
	if _, ok := s.lines[path]; !ok {
		s.lines[path] = line
	}
}

// resolve turns header key parts into a path, indexing arrays of tables
// by their current element.
func (s *tomlScanner) resolve(parts []string) string {
	p := ""
	for _, part := range parts {
		p = join(p, part)
		if n, ok := s.counts[p]; ok {
			p = fmt.Sprintf("%s[%d]", p, n-1)
		}
	}
	return p
}

func (s *tomlScanner) document() {
	table := ""
	for {
		s.skip(true)
		if s.eof() {
			return
		}
		start := s.pos
		switch {
		case strings.HasPrefix(s.src[s.pos:], "[["):
			s.pos += 2
			parts := s.key()
			name := s.resolve(parts[:len(parts)-1])
			name = join(name, parts[len(parts)-1])
			idx := s.counts[name]
			s.counts[name] = idx + 1
			table = fmt.Sprintf("%s[%d]", name, idx)
			s.record(name, s.line)
			s.record(table, s.line)
			s.skipLine()
		case s.peek() == '[':
			s.pos++
			table = s.resolve(s.key())
			s.record(table, s.line)
			s.skipLine()
		default:
			s.keyValue(table)
		}
		if s.pos == start { // cannot happen on valid TOML; never loop
			s.advance()
		}
	}
}

// keyValue scans key = value under path.
func (s *tomlScanner) keyValue(path string) {
	parts := s.key()
	if len(parts) == 0 {
		s.advance()
		return
	}
	p := path
	for _, part := range parts {
		p = join(p, part)
		s.record(p, s.line)
	}
	s.skip(false)
	if s.peek() == '=' {
		s.advance()
	}
	s.skip(false)
	s.value(p)
}

// key reads a dotted key: bare or quoted parts.
func (s *tomlScanner) key() []string {
	var parts []string
	for {
		s.skip(false)
		switch c := s.peek(); {
		case c == '"' || c == '\'':
			start := s.pos
			s.str()
			raw := s.src[start:s.pos]
			parts = append(parts, strings.Trim(raw, string(c)))
		case isBare(c):
			start := s.pos
			for !s.eof() && isBare(s.peek()) {
				s.advance()
			}
			parts = append(parts, s.src[start:s.pos])
		default:
			return parts
		}
		s.skip(false)
		if s.peek() != '.' {
			return parts
		}
		s.advance()
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value scans one value at path, recording inline table keys and array
// elements.
func (s *tomlScanner) value(path string) {
	switch s.peek() {
	case '{':
		s.advance()
		for {
			s.skip(true)
			if s.eof() || s.peek() == '}' {
				s.advance()
				return
			}
			if s.peek() == ',' {
				s.advance()
				continue
			}
			start := s.pos
			s.keyValue(path)
			if s.pos == start {
				s.advance()
			}
		}
	case '[':
		s.advance()
		for i := 0; ; {
			s.skip(true)
			switch s.peek() {
			case 0, ']':
				s.advance()
				return
			case ',':
				s.advance()
				i++
				continue
			}
			elem := fmt.Sprintf("%s[%d]", path, i)
			s.record(elem, s.line)
			start := s.pos
			s.value(elem)
			if s.pos == start {
				s.advance()
			}
		}
	case '"', '\'':
		s.str()
	default:
		for !s.eof() {
			switch s.peek() {
			case ',', ']', '}', '\n', '#':
				return
			}
			s.advance()
		}
	}
}

// str skips a basic, literal or multi-line string.
func (s *tomlScanner) str() {
	q := s.peek()
	delim := string(q)
	if strings.HasPrefix(s.src[s.pos:], strings.Repeat(delim, 3)) {
		delim = strings.Repeat(delim, 3)
	}
	for range len(delim) {
		s.advance()
	}
	for !s.eof() {
		if q == '"' && s.peek() == '\\' {
			s.advance()
			s.advance()
			continue
		}
		if strings.HasPrefix(s.src[s.pos:], delim) {
			for range len(delim) {
				s.advance()
			}
			// A multi-line string may end with up to two extra quotes.
			for len(delim) == 3 && s.peek() == q {
				s.advance()
			}
			return
		}
		s.advance()
	}
}
