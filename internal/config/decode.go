package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The raw structs mirror the file's keys. They hold what the file says
// before defaults and checks; File is built from them.
type rawFile struct {
	Listen         string      `yaml:"listen"`
	Mode           string      `yaml:"mode"`
	Nodes          []rawMember `yaml:"nodes"`
	Groups         []rawGroup  `yaml:"groups"`
	Embedded       int         `yaml:"embedded"`
	Check          rawCheck    `yaml:"check"`
	FailbackHold   duration    `yaml:"failback_hold"`
	DialTimeout    duration    `yaml:"dial_timeout"`
	WriteTimeout   duration    `yaml:"write_timeout"`
	AttemptTimeout duration    `yaml:"attempt_timeout"`
	AttemptMin     duration    `yaml:"attempt_timeout_min"`
	Replicas       int         `yaml:"replicas"`
	MinReplicas    int         `yaml:"min_replicas"`
	StandbyDelay   duration    `yaml:"standby_delay"`
	AckTopic       string      `yaml:"ack_topic"`
	TimerTopic     string      `yaml:"timer_topic"`
	TimerHop       duration    `yaml:"timer_hop"`
	Eject          rawEject    `yaml:"eject"`
	Lookupd        rawLookupd  `yaml:"lookupd"`
	Limits         rawLimits   `yaml:"limits"`
	MetricsListen  string      `yaml:"metrics_listen"`
	TLS            rawTLS      `yaml:"tls"`
	NSQD           rawNSQD     `yaml:"nsqd"`
	Auth           rawAuth     `yaml:"auth"`
}

type rawMember struct {
	Name string `yaml:"name"`
	TCP  string `yaml:"tcp"`
	HTTP string `yaml:"http"`
}

type rawGroup struct {
	Name    string      `yaml:"name"`
	Members []rawMember `yaml:"members"`
}

type rawCheck struct {
	Interval duration `yaml:"interval"`
	Timeout  duration `yaml:"timeout"`
	Jitter   float64  `yaml:"jitter"`
	Fall     int      `yaml:"fall"`
	Rise     int      `yaml:"rise"`
}

type rawEject struct {
	Consecutive int      `yaml:"consecutive"`
	Base        duration `yaml:"base"`
	Max         duration `yaml:"max"`
	Decay       duration `yaml:"decay"`
	MaxPercent  int      `yaml:"max_percent"`
}

type rawLookupd struct {
	Addrs        []string `yaml:"addrs"`
	PollInterval duration `yaml:"poll_interval"`
}

type rawLimits struct {
	MaxBodyBytes     int64 `yaml:"max_body_bytes"`
	MaxBatchMessages int   `yaml:"max_batch_messages"`
	MaxBatchBytes    int64 `yaml:"max_batch_bytes"`

	MaxStreams               int64   `yaml:"max_streams"`
	MaxSubscriptionsPerToken int     `yaml:"max_subscriptions_per_token"`
	RatePerToken             float64 `yaml:"rate_per_token"`
	RateBurst                int     `yaml:"rate_burst"`
}

// duration is a time.Duration written as a string such as "500ms".
type duration time.Duration

// UnmarshalText lets yaml.v3 decode a duration string.
func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. \"500ms\", \"2s\", \"1m\")", b)
	}
	*d = duration(v)
	return nil
}

var durationType = reflect.TypeFor[duration]()

// parseYAML parses data into yaml.v3's node tree; a syntax error becomes a
// FieldError with its line. An empty file is an empty mapping.
func parseYAML(name string, data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{Kind: yaml.MappingNode, Line: 1}, nil
		}
		// yaml.v3's syntax errors are plain errors, "yaml: line N: msg":
		// the text is the only place that holds the line.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
			_, msg, _ = strings.Cut(msg, ": ")
		}
		return nil, &FieldError{File: name, Line: line, Msg: "YAML: " + msg}
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return nil, &FieldError{File: name, Line: more.Line, Msg: "YAML: more than one document"}
	}
	if len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.MappingNode, Line: 1}, nil
	}
	return doc.Content[0], nil
}

// decoder fills the raw structs from yaml.v3's nodes. yaml.v3 converts each
// scalar (Node.Decode); the decoder walks the mappings and lists itself
// because yaml.v3 reports unknown keys and type errors as text with a line
// but without the field's path (groups[1].members[0].tcp), and the checker
// needs the line of every path it may report.
type decoder struct {
	file  string
	errs  []*FieldError
	lines map[string]int
	bad   map[string]bool // paths with an error: checked no further
}

func (d *decoder) errorf(line int, path, format string, args ...any) {
	if d.bad[path] {
		return // one error per field is enough
	}
	d.bad[path] = true
	d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Field: path, Msg: fmt.Sprintf(format, args...)})
}

// decode stores n, written at line (a mapping value's: its key's), into v,
// strictly: unknown keys and values of the wrong type are errors.
func (d *decoder) decode(n *yaml.Node, line int, v reflect.Value, path string) {
	if path != "" {
		d.lines[path] = line
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!!null" {
		return // as if absent
	}
	switch {
	case v.Kind() == reflect.Struct:
		d.mapping(n, line, v, path)
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(line, path, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, c.Line, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	default:
		want, tags := scalarWant(v.Type())
		if n.Kind != yaml.ScalarNode || !slices.Contains(tags, n.Tag) {
			d.errorf(line, path, "want %s, got %s", want, describe(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			if _, isType := errors.AsType[*yaml.TypeError](err); isType {
				d.errorf(line, path, "%s is out of range", n.Value)
			} else {
				d.errorf(line, path, "%v", err)
			}
			return
		}
		if v.Kind() == reflect.Float64 && (math.IsNaN(v.Float()) || math.IsInf(v.Float(), 0)) {
			d.errorf(line, path, "want a finite number")
		}
	}
}

// mapping stores the mapping n into the struct v, field by yaml tag.
func (d *decoder) mapping(n *yaml.Node, line int, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(line, path, "want a mapping, got %s", describe(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := join(path, k.Value)
		switch {
		case k.Tag == "!!merge":
			d.errorf(k.Line, path, "merge keys (<<) are not supported")
			continue
		case k.Kind != yaml.ScalarNode:
			d.errorf(k.Line, path, "keys must be strings")
			continue
		case seen[k.Value]:
			d.errorf(k.Line, kp, "duplicate key")
			continue
		}
		seen[k.Value] = true
		f, ok := fieldByKey(v, k.Value)
		if !ok {
			d.errorf(k.Line, kp, "unknown field (known: %s)", knownKeys(v.Type()))
			continue
		}
		d.decode(val, k.Line, f, kp)
	}
}

// scalarWant names what a scalar field of type t takes, for errors, and
// the YAML tags it accepts.
func scalarWant(t reflect.Type) (want string, tags []string) {
	switch {
	case t == durationType:
		return `a duration string such as "500ms"`, []string{"!!str"}
	case t.Kind() == reflect.String:
		return "a string", []string{"!!str"}
	case t.Kind() == reflect.Bool:
		return "true or false", []string{"!!bool"}
	case t.Kind() == reflect.Float64:
		return "a number", []string{"!!int", "!!float"}
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return "an integer", []string{"!!int"}
	}
	panic(fmt.Sprintf("config: raw field of type %v", t))
}

func fieldByKey(v reflect.Value, key string) (reflect.Value, bool) {
	for i := range v.NumField() {
		if v.Type().Field(i).Tag.Get("yaml") == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func knownKeys(t reflect.Type) string {
	var keys []string
	for i := range t.NumField() {
		keys = append(keys, t.Field(i).Tag.Get("yaml"))
	}
	return strings.Join(keys, ", ")
}

// describe names what a node holds, for errors.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Tag == "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	case n.Tag == "!!int":
		return "the integer " + n.Value
	case n.Tag == "!!float":
		return "the number " + n.Value
	case n.Tag == "!!bool":
		return "the boolean " + n.Value
	}
	return fmt.Sprintf("%s (tag %s)", n.Value, n.Tag)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
