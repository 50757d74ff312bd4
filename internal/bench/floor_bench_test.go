package bench

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"testing"

	"google.golang.org/grpc"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/grpctest"
	"github.com/qgate/qgate/internal/server"
)

// floorQueue answers Send without doing anything: the gRPC floor.
type floorQueue struct {
	qgatev1.UnimplementedQueueServiceServer
}

func (floorQueue) Send(_ context.Context, req *qgatev1.SendRequest) (*qgatev1.SendResponse, error) {
	ids := make([]string, len(req.GetMessages()))
	for i := range ids {
		ids[i] = "0123456789abcdef0123456789abcdef"
	}
	return &qgatev1.SendResponse{MessageIds: ids}, nil
}

// BenchmarkGRPCFloorParallel is what 64 callers of a unary Send of one
// message cost when the server does nothing (same server package and
// interceptor chain as qgate, no NSQ): the ceiling of qgate's unary
// throughput on this machine, whatever the pool does. Compare with
// BenchmarkDirectPublishParallel.
func BenchmarkGRPCFloorParallel(b *testing.B) {
	srv, err := server.New(server.Config{
		Addr:   "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler),
		Queue:  floorQueue{},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-served
	})
	sendParallel(b, srv.Addr().String())
}

// benchFloorBare is BenchmarkGRPCFloorParallel on a bare grpc.Server built
// with opts (no interceptors), to see what server tuning can win.
func benchFloorBare(b *testing.B, opts ...grpc.ServerOption) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	qgatev1.RegisterQueueServiceServer(s, floorQueue{})
	go s.Serve(lis)
	b.Cleanup(s.Stop)
	sendParallel(b, lis.Addr().String())
}

// sendParallel measures unary Sends of one message from 32×GOMAXPROCS
// goroutines to the server at addr.
func sendParallel(b *testing.B, addr string) {
	client := qgatev1.NewQueueServiceClient(grpctest.Dial(b, addr))
	req := &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: make([]byte, DefaultSize)}}}
	b.ReportAllocs()
	b.SetParallelism(32)
	c0 := cpuNow()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Send(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	cpuReport(b, c0, b.N)
}

// BenchmarkGRPCFloorBare: no interceptors.
func BenchmarkGRPCFloorBare(b *testing.B) { benchFloorBare(b) }

// BenchmarkGRPCFloorBareWorkers: no interceptors, stream workers reused
// (no goroutine and stack growth per RPC).
func BenchmarkGRPCFloorBareWorkers(b *testing.B) {
	benchFloorBare(b, grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))))
}
