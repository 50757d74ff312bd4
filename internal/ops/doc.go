// Package ops holds the end-to-end tests of qgate's production operations
// wiring — metrics, auth, TLS and limits around the real pool, service and
// server — and the Node.js client test (clients/node). It has no code of
// its own: the pieces are packages internal/metrics, internal/auth,
// internal/tlsutil and internal/limits, wired into `qgate serve` by
// cmd/qgate/ops.go as docs/ARCHITECTURE.md (Operations) describes; the
// README's Operations section is the operator's view.
package ops
