package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds Parse arbitrary YAML: it must not panic, every error
// must be a *FieldError, and every error about a field must name its line
// (some YAML syntax errors, such as an unknown anchor, come from yaml.v3
// without one).
func FuzzParse(f *testing.F) {
	examples, _ := filepath.Glob("../../docs/examples/*.yaml")
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("mode: cluster\nnodes: [{tcp: a:1, x: *y}]\n"))
	f.Add([]byte("a: &a [*a]\n<<: {mode: ha}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("f.yaml", data)
		for _, e := range unjoin(err) {
			if e == nil {
				continue
			}
			var fe *FieldError
			if !errors.As(e, &fe) {
				t.Fatalf("error %v is not a *FieldError", e)
			}
			if fe.Field != "" && fe.Line < 1 {
				t.Errorf("error %q has no line", fe.Error())
			}
		}
	})
}
