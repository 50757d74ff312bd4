package limits_test

import (
	"fmt"

	"google.golang.org/grpc"

	"github.com/qgate/qgate/internal/limits"
)

func ExampleMaxRecvMsgSize() {
	// nsqd's default --max-body-size is 5 MiB.
	fmt.Println(limits.MaxRecvMsgSize(5 << 20))
	// Output: 5308416
}

func ExampleNew() {
	lim := limits.New(limits.Config{MaxConcurrentStreams: 1000, MaxSubscriptionsPerToken: 50, Rate: 500})
	opts := append(lim.ServerOptions(),
		// after auth's interceptors, which name the token
		grpc.ChainUnaryInterceptor(lim.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(lim.StreamServerInterceptor()),
	)
	srv := grpc.NewServer(opts...)
	defer srv.Stop()
}
