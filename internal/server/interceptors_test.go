package server

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// recorder is a slog handler that keeps the records it gets.
type recorder struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func attrsOf(rec slog.Record) map[string]string {
	m := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	return m
}

// TestAccessLog: an OK call is logged only when Debug is on; a failed one at
// its code's level with method, code, error, duration and topic.
func TestAccessLog(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/qgate.v1.QueueService/Send"}
	req := &qgatev1.SendRequest{Topic: "orders"}
	ok := func(context.Context, any) (any, error) { return &qgatev1.SendResponse{}, nil }
	fail := func(context.Context, any) (any, error) { return nil, status.Error(codes.Unavailable, "no node") }
	tests := []struct {
		name      string
		level     slog.Level
		handler   grpc.UnaryHandler
		wantLevel slog.Level // of the one line; none if wantCode is ""
		wantCode  string
	}{
		{"ok, info", slog.LevelInfo, ok, 0, ""},
		{"ok, debug", slog.LevelDebug, ok, slog.LevelDebug, "OK"},
		{"unavailable, info", slog.LevelInfo, fail, slog.LevelWarn, "Unavailable"},
		{"unavailable, error", slog.LevelError, fail, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{level: tt.level}
			_, err := accessLog(slog.New(rec))(context.Background(), req, info, tt.handler)
			if got, want := status.Code(err).String(), tt.wantCode; want != "" && got != want {
				t.Errorf("code %s, want %s", got, want)
			}
			if tt.wantCode == "" {
				if len(rec.recs) != 0 {
					t.Errorf("%d lines, want none", len(rec.recs))
				}
				return
			}
			if len(rec.recs) != 1 {
				t.Fatalf("%d lines, want 1", len(rec.recs))
			}
			r := rec.recs[0]
			if r.Level != tt.wantLevel || r.Message != "finished call" {
				t.Errorf("line %v %q, want %v \"finished call\"", r.Level, r.Message, tt.wantLevel)
			}
			a := attrsOf(r)
			for k, want := range map[string]string{"grpc.service": "qgate.v1.QueueService",
				"grpc.method": "Send", "grpc.code": tt.wantCode, "topic": "orders"} {
				if a[k] != want {
					t.Errorf("%s = %q, want %q", k, a[k], want)
				}
			}
			if _, has := a["grpc.time_ms"]; !has {
				t.Error("no grpc.time_ms")
			}
			if _, has := a["grpc.error"]; has != (err != nil) {
				t.Errorf("grpc.error present %v, want %v", has, err != nil)
			}
		})
	}
}

// BenchmarkAccessLogOK: the logging interceptor's cost for an OK call with
// Debug off (the usual production setting).
func BenchmarkAccessLogOK(b *testing.B) {
	l := slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	in := accessLog(l)
	info := &grpc.UnaryServerInfo{FullMethod: "/qgate.v1.QueueService/Send"}
	req := &qgatev1.SendRequest{Topic: "orders"}
	resp := &qgatev1.SendResponse{}
	h := func(context.Context, any) (any, error) { return resp, nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = in(ctx, req, info, h)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
