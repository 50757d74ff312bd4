package service

import (
	"context"
	"fmt"
	"testing"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

type nopBackend struct{}

func (nopBackend) Send(context.Context, string, []*backends.Message, backends.SendOptions) error {
	return nil
}
func (nopBackend) Subscribe(context.Context, backends.SubscribeOptions) (backends.Subscription, error) {
	return nil, backends.ErrClosed
}
func (nopBackend) Close() error { return nil }

// BenchmarkSend measures the service's own cost of a Send (validation, ids,
// messages), without gRPC and with a backend that does nothing.
func BenchmarkSend(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprint("messages=", n), func(b *testing.B) {
			q := New(nopBackend{})
			req := &qgatev1.SendRequest{Topic: "bench_topic", Messages: make([]*qgatev1.Message, n)}
			for i := range req.Messages {
				req.Messages[i] = &qgatev1.Message{Body: make([]byte, 256), Attributes: map[string]string{"trace": "abc123"}}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := q.Send(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkValidName(b *testing.B) {
	for b.Loop() {
		if !ValidName("orders.eu-west_1#ephemeral") {
			b.Fatal("invalid")
		}
	}
}
