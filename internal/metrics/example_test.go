package metrics_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/qgate/qgate/internal/metrics"
)

func ExampleMetrics_Handler() {
	m := metrics.New()
	h := m.Handler(func() bool { return false }) // pass the pool's Writable
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	fmt.Println(rec.Code, rec.Body.String())
	// Output: 503 not ready
}
