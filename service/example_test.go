package service_test

import (
	"context"
	"log"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/service"
)

// Example wires the services to a pool and shuts them down in order.
func Example() {
	groups, _ := nsq.GroupsForMode(nsq.ModeCluster, []nsq.NodeConfig{{TCPAddr: "127.0.0.1:4150", HTTPAddr: "127.0.0.1:4151"}})
	pool, err := nsq.New(nsq.Config{Groups: groups})
	if err != nil {
		log.Fatal(err)
	}
	queue := service.New(pool, service.WithSendStreamWindow(64))
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(queue.Limits().MaxRequestBytes()))
	qgatev1.RegisterQueueServiceServer(srv, queue)
	qgatev1.RegisterAdminServiceServer(srv, service.NewAdmin(pool))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	h := service.StartHealth(hs, pool)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(lis)

	// On SIGTERM: NOT_SERVING, end the streams (subscriptions hand their
	// unacked messages back), then stop gRPC, then the pool.
	hs.Shutdown()
	h.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := queue.Shutdown(ctx); err != nil {
		log.Print("streams still open: ", err)
	}
	srv.GracefulStop()
	pool.Close()
}
