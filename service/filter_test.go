package service

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

func TestCompileFilter(t *testing.T) {
	order := map[string]string{"kind": "order", "region": "eu-west"}
	tests := []struct {
		expr string
		in   map[string]string
		want bool
	}{
		{`attributes["kind"] == "order"`, order, true},
		{`attributes.kind == "order" && attributes.region.startsWith("eu")`, order, true},
		{`attributes.region.startsWith("us")`, order, false},
		{`has(attributes.priority)`, order, false},
		{`"kind" in attributes`, order, true},
		{`!("kind" in attributes)`, nil, true},          // a body without attributes
		{`attributes.priority == "high"`, order, false}, // a missing key: an error, false
		{`attributes.kind == "order" || attributes.missing == "x"`, order, true},
		{`attributes.kind.matches("^ord")`, order, true},
		{`size(attributes) == 2`, order, true},
	}
	for _, tc := range tests {
		f, err := compileFilter(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if got := f(tc.in); got != tc.want {
			t.Errorf("%s on %v = %v, want %v", tc.expr, tc.in, got, tc.want)
		}
	}
}

// TestCheckOpenFilter: a filter that does not compile, is not a bool or
// is too long fails the open with a violation on open.filter that says
// where.
func TestCheckOpenFilter(t *testing.T) {
	l := DefaultLimits()
	tests := []struct {
		filter string
		want   string // in the violation's description
	}{
		{`attributes.kind ==`, "line 1, column 19"},
		{"attributes.kind == \"a\" &&\n  nosuch == 1", "line 2, column 3"},
		{`attributes.kind`, "it must be a bool"},
		{`1 + 1`, "it must be a bool"},
		{strings.Repeat(" ", MaxFilterBytes) + "true", "at most 4096"},
	}
	for _, tc := range tests {
		_, _, err := checkOpen(&l, &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", Filter: tc.filter})
		code, fields := violationFields(err)
		if code != codes.InvalidArgument || len(fields) != 1 || fields[0] != "open.filter" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("filter %q: got %v %v (%v), want open.filter saying %q", tc.filter, code, fields, err, tc.want)
		}
	}
	opts, _, err := checkOpen(&l, &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", Filter: `has(attributes.k)`})
	if err != nil || opts.Filter == nil || !opts.Filter(map[string]string{"k": ""}) || opts.Filter(nil) {
		t.Errorf("a good filter: %v, predicate set %v", err, opts.Filter != nil)
	}
}
