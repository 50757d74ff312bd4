package service

import (
	"context"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// TestSendReplicas: the request's replicas reach the backend, 0 takes the
// server default, and more than MaxReplicas is INVALID_ARGUMENT on the
// replicas field without reaching the backend.
func TestSendReplicas(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []Option
		replicas  uint32
		want      int // replicas the backend sees; 0: not called
		wantCode  codes.Code
		wantField []string
	}{
		{"unset, no server default", nil, 0, 1, codes.OK, nil},
		{"unset, server default 2", []Option{WithDefaultReplicas(2)}, 0, 2, codes.OK, nil},
		{"request overrides default", []Option{WithDefaultReplicas(2)}, 1, 1, codes.OK, nil},
		{"3", nil, 3, 3, codes.OK, nil},
		{"4 is too many", nil, 4, 0, codes.InvalidArgument, []string{"replicas"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFaultBackend()
			var mu sync.Mutex
			got := 0
			b.send = func(_ context.Context, _ string, _ []*backends.Message, opts backends.SendOptions) error {
				mu.Lock()
				got = opts.Replicas
				mu.Unlock()
				return nil
			}
			client := qgatev1.NewQueueServiceClient(serve(t, New(b, tc.opts...), nil))
			_, err := client.Send(t.Context(), &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Replicas: tc.replicas})
			if code, fields := violationFields(err); code != tc.wantCode || !slices.Equal(fields, tc.wantField) {
				t.Fatalf("got %v (fields %v), want %v %v", err, fields, tc.wantCode, tc.wantField)
			}
			mu.Lock()
			defer mu.Unlock()
			if got != tc.want {
				t.Errorf("backend saw replicas %d, want %d", got, tc.want)
			}
		})
	}
}

// TestSendReplicasNSQ: over two nsqd nodes (two groups), replicas 2 is OK
// and replicas 3 is UNAVAILABLE.
func TestSendReplicasNSQ(t *testing.T) {
	env := startNSQ(t, 2)
	if _, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "r", Messages: msgs("a"), Replicas: 2}); err != nil {
		t.Fatalf("replicas 2 over 2 groups: %v", err)
	}
	_, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "r", Messages: msgs("b"), Replicas: 3})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("replicas 3 over 2 groups: got %v, want UNAVAILABLE", err)
	}
	t.Log(err)
}
