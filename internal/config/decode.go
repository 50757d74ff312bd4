package config

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"
)

// The raw structs mirror the file's keys (tag `key`). They hold what the
// file says before defaults and checks; File is built from them.
type rawFile struct {
	Listen         string      `key:"listen"`
	Mode           string      `key:"mode"`
	Nodes          []rawMember `key:"nodes"`
	Groups         []rawGroup  `key:"groups"`
	Check          rawCheck    `key:"check"`
	FailbackHold   duration    `key:"failback_hold"`
	DialTimeout    duration    `key:"dial_timeout"`
	WriteTimeout   duration    `key:"write_timeout"`
	AttemptTimeout duration    `key:"attempt_timeout"`
	AttemptMin     duration    `key:"attempt_timeout_min"`
	Eject          rawEject    `key:"eject"`
	Lookupd        rawLookupd  `key:"lookupd"`
	Limits         rawLimits   `key:"limits"`
	MetricsListen  string      `key:"metrics_listen"`
	TLS            rawTLS      `key:"tls"`
	NSQD           rawNSQD     `key:"nsqd"`
	Auth           rawAuth     `key:"auth"`
}

type rawMember struct {
	Name string `key:"name"`
	TCP  string `key:"tcp"`
	HTTP string `key:"http"`
}

type rawGroup struct {
	Name    string      `key:"name"`
	Members []rawMember `key:"members"`
}

type rawCheck struct {
	Interval duration `key:"interval"`
	Timeout  duration `key:"timeout"`
	Jitter   float64  `key:"jitter"`
	Fall     int      `key:"fall"`
	Rise     int      `key:"rise"`
}

type rawEject struct {
	Consecutive int      `key:"consecutive"`
	Base        duration `key:"base"`
	Max         duration `key:"max"`
	Decay       duration `key:"decay"`
	MaxPercent  int      `key:"max_percent"`
}

type rawLookupd struct {
	Addrs        []string `key:"addrs"`
	PollInterval duration `key:"poll_interval"`
}

type rawLimits struct {
	MaxBodyBytes     int64 `key:"max_body_bytes"`
	MaxBatchMessages int   `key:"max_batch_messages"`
	MaxBatchBytes    int64 `key:"max_batch_bytes"`

	MaxStreams               int64   `key:"max_streams"`
	MaxSubscriptionsPerToken int     `key:"max_subscriptions_per_token"`
	RatePerToken             float64 `key:"rate_per_token"`
	RateBurst                int     `key:"rate_burst"`
}

// duration is a time.Duration written as a string such as "500ms".
type duration time.Duration

var durationType = reflect.TypeFor[duration]()

// decoder fills raw structs from a tree, strictly: unknown keys and values
// of the wrong type are errors. It records the line of every path it sees.
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

func (d *decoder) decode(t *tree, v reflect.Value, path string) {
	if path != "" {
		d.lines[path] = t.line
	}
	if t.kind == kScalar && t.val == nil {
		return // YAML null: as if absent
	}
	if v.Type() == durationType {
		s, ok := t.val.(string)
		if t.kind != kScalar || !ok {
			d.errorf(t.line, path, "want a duration string such as \"500ms\", got %s", describe(t))
			return
		}
		dur, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			d.errorf(t.line, path, "invalid duration %q (want e.g. \"500ms\", \"2s\", \"1m\")", s)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if t.kind != kMap {
			d.errorf(t.line, path, "want a mapping, got %s", describe(t))
			return
		}
		for _, k := range t.keys {
			f, ok := fieldByKey(v, k)
			if !ok {
				d.errorf(t.vals[k].line, join(path, k), "unknown field (known: %s)", knownKeys(v.Type()))
				continue
			}
			d.decode(t.vals[k], f, join(path, k))
		}
	case reflect.Slice:
		if t.kind != kList {
			d.errorf(t.line, path, "want a list, got %s", describe(t))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(t.items), len(t.items))
		for i, item := range t.items {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		s, ok := t.val.(string)
		if t.kind != kScalar || !ok {
			d.errorf(t.line, path, "want a string, got %s", describe(t))
			return
		}
		v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, ok := t.val.(int64)
		if t.kind != kScalar || !ok {
			d.errorf(t.line, path, "want an integer, got %s", describe(t))
			return
		}
		if v.OverflowInt(n) {
			d.errorf(t.line, path, "%d is out of range", n)
			return
		}
		v.SetInt(n)
	case reflect.Bool:
		b, ok := t.val.(bool)
		if t.kind != kScalar || !ok {
			d.errorf(t.line, path, "want true or false, got %s", describe(t))
			return
		}
		v.SetBool(b)
	case reflect.Float64:
		switch x := t.val.(type) {
		case int64:
			v.SetFloat(float64(x))
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				d.errorf(t.line, path, "want a finite number")
				return
			}
			v.SetFloat(x)
		default:
			d.errorf(t.line, path, "want a number, got %s", describe(t))
		}
	default:
		panic(fmt.Sprintf("config: raw field of kind %v", v.Kind()))
	}
}

func fieldByKey(v reflect.Value, key string) (reflect.Value, bool) {
	for i := range v.NumField() {
		if v.Type().Field(i).Tag.Get("key") == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func knownKeys(t reflect.Type) string {
	var keys []string
	for i := range t.NumField() {
		keys = append(keys, t.Field(i).Tag.Get("key"))
	}
	return strings.Join(keys, ", ")
}

// describe names what a tree holds, for errors.
func describe(t *tree) string {
	if t.kind != kScalar {
		return t.kind.String()
	}
	switch x := t.val.(type) {
	case string:
		return fmt.Sprintf("the string %q", x)
	case int64:
		return fmt.Sprintf("the integer %d", x)
	case float64:
		return fmt.Sprintf("the number %v", x)
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	}
	return fmt.Sprintf("%T", t.val)
}
