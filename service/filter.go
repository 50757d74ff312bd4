// Subscription filters: open.filter, a CEL expression over a message's
// attributes, compiled into the backend's Filter predicate.

package service

import (
	"fmt"

	"cel.dev/cel-go/cel"
)

// Limits of open.filter.
const (
	// MaxFilterBytes bounds the expression's length.
	MaxFilterBytes = 4096
	// filterCostLimit bounds one evaluation (CEL's cost units: about one
	// per operation and per byte of a string compared). A filter that
	// exceeds it counts as false for that message.
	filterCostLimit = 100_000
)

// compileFilter compiles expr, a CEL expression of type bool over the
// variable attributes (map(string, string)), into a predicate safe for
// concurrent use. An evaluation that fails counts as false. The error says
// what is wrong, with the line and column.
func compileFilter(expr string) (func(map[string]string) bool, error) {
	env, err := cel.NewEnv(cel.Variable("attributes", cel.MapType(cel.StringType, cel.StringType)))
	if err != nil {
		return nil, fmt.Errorf("the filter environment: %w", err) // not the client's fault
	}
	ast, iss := env.Compile(expr)
	if err := iss.Err(); err != nil {
		e := iss.Errors()[0]
		return nil, fmt.Errorf("does not compile: line %d, column %d: %s", e.Location.Line(), e.Location.Column()+1, e.Message)
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("is of type %s; it must be a bool", t)
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(filterCostLimit))
	if err != nil {
		return nil, fmt.Errorf("does not compile: %w", err)
	}
	return func(attrs map[string]string) bool {
		if attrs == nil {
			attrs = map[string]string{}
		}
		out, _, err := prg.Eval(map[string]any{"attributes": attrs})
		if err != nil {
			return false
		}
		b, ok := out.Value().(bool)
		return ok && b
	}, nil
}
