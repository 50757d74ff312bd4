package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"
)

// A tree is a parsed file in a format-neutral shape: maps, lists and
// scalars, each with the line it was written on. Both YAML and TOML become a
// tree, and one decoder turns a tree into the raw structs, so both formats
// are strict in the same way and report the same field paths.
type tree struct {
	line  int
	kind  kind
	keys  []string // map: keys in file order
	vals  map[string]*tree
	items []*tree // list
	val   any     // scalar: string, int64, float64, bool or a time
}

type kind int

const (
	kScalar kind = iota
	kMap
	kList
)

func (k kind) String() string {
	switch k {
	case kMap:
		return "a mapping"
	case kList:
		return "a list"
	}
	return "a scalar"
}

// yamlLine finds "line N" in yaml.v3's error messages.
var yamlLine = regexp.MustCompile(`line (\d+)`)

// parseYAML parses data into a tree. A syntax error becomes a FieldError
// with the line yaml.v3 reports.
func parseYAML(name string, data []byte) (*tree, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // an empty file
			return &tree{kind: kMap, line: 1, vals: map[string]*tree{}}, nil
		}
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = strings.TrimPrefix(strings.TrimPrefix(msg, m[0]), ": ")
		}
		return nil, &FieldError{File: name, Line: line, Msg: "YAML: " + msg}
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return nil, &FieldError{File: name, Line: more.Line, Msg: "YAML: more than one document"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return &tree{kind: kMap, line: 1, vals: map[string]*tree{}}, nil
		}
		root = root.Content[0]
	}
	var errs []error
	t := fromYAML(name, root, "", &errs, 0)
	return t, errors.Join(errs...)
}

// fromYAML converts a yaml.Node; path names it in errors.
func fromYAML(name string, n *yaml.Node, path string, errs *[]error, depth int) *tree {
	if depth > 64 {
		*errs = append(*errs, &FieldError{File: name, Line: n.Line, Field: path, Msg: "nested too deep"})
		return &tree{line: n.Line}
	}
	switch n.Kind {
	case yaml.AliasNode:
		return fromYAML(name, n.Alias, path, errs, depth+1)
	case yaml.MappingNode:
		t := &tree{line: n.Line, kind: kMap, vals: map[string]*tree{}}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
				*errs = append(*errs, &FieldError{File: name, Line: k.Line, Field: path, Msg: "merge keys (<<) are not supported"})
				continue
			}
			if k.Kind != yaml.ScalarNode {
				*errs = append(*errs, &FieldError{File: name, Line: k.Line, Field: path, Msg: "keys must be strings"})
				continue
			}
			kp := join(path, k.Value)
			if _, dup := t.vals[k.Value]; dup {
				*errs = append(*errs, &FieldError{File: name, Line: k.Line, Field: kp, Msg: "duplicate key"})
				continue
			}
			t.keys = append(t.keys, k.Value)
			c := fromYAML(name, v, kp, errs, depth+1)
			c.line = k.Line // errors point at the key
			t.vals[k.Value] = c
		}
		return t
	case yaml.SequenceNode:
		t := &tree{line: n.Line, kind: kList}
		for i, c := range n.Content {
			t.items = append(t.items, fromYAML(name, c, fmt.Sprintf("%s[%d]", path, i), errs, depth+1))
		}
		return t
	default:
		t := &tree{line: n.Line, kind: kScalar}
		if n.Tag == "!!null" {
			t.val = nil
			return t
		}
		var v any
		if err := n.Decode(&v); err != nil {
			*errs = append(*errs, &FieldError{File: name, Line: n.Line, Field: path, Msg: err.Error()})
			return t
		}
		switch x := v.(type) {
		case int:
			t.val = int64(x)
		case uint64:
			t.val = float64(x)
		default:
			t.val = x
		}
		return t
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var tomlPrefix = regexp.MustCompile(`^toml: line \d+( \(last key "[^"]*"\))?: `)

// parseTOML parses data into a tree. A syntax error becomes a FieldError
// with the line the TOML parser reports; keys get the lines tomlLines finds.
func parseTOML(name string, data []byte) (*tree, error) {
	var m map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&m); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// Error() is "toml: line N (last key "k"): msg"; keep msg.
			msg := tomlPrefix.ReplaceAllString(pe.Error(), "")
			if pe.LastKey != "" {
				msg += fmt.Sprintf(" (after key %q)", pe.LastKey)
			}
			return nil, &FieldError{File: name, Line: pe.Position.Line, Msg: "TOML: " + msg}
		}
		return nil, &FieldError{File: name, Msg: "TOML: " + err.Error()}
	}
	lines := tomlLines(data)
	return fromTOML(m, "", lines, 1), nil
}

// fromTOML converts the decoded TOML value v found at path.
func fromTOML(v any, path string, lines map[string]int, parentLine int) *tree {
	line := lines[path]
	if line == 0 {
		line = parentLine
	}
	switch x := v.(type) {
	case map[string]any:
		t := &tree{line: line, kind: kMap, vals: map[string]*tree{}}
		for k, c := range x {
			t.keys = append(t.keys, k)
			t.vals[k] = fromTOML(c, join(path, k), lines, line)
		}
		// TOML maps have no order; sort by line, then name, for stable errors.
		sort.Slice(t.keys, func(i, j int) bool {
			li, lj := t.vals[t.keys[i]].line, t.vals[t.keys[j]].line
			if li != lj {
				return li < lj
			}
			return t.keys[i] < t.keys[j]
		})
		return t
	case []map[string]any:
		t := &tree{line: line, kind: kList}
		for i, c := range x {
			t.items = append(t.items, fromTOML(c, fmt.Sprintf("%s[%d]", path, i), lines, line))
		}
		return t
	case []any:
		t := &tree{line: line, kind: kList}
		for i, c := range x {
			t.items = append(t.items, fromTOML(c, fmt.Sprintf("%s[%d]", path, i), lines, line))
		}
		return t
	default:
		return &tree{line: line, kind: kScalar, val: x}
	}
}
