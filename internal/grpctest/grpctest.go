// Package grpctest serves a grpc.Server on a loopback port for a test and
// dials it: the setup the interceptor tests (auth, limits, metrics) and
// the benchmarks share.
package grpctest

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Serve serves srv on a free 127.0.0.1 port until the test ends and
// returns a plaintext connection to it, closed when the test ends.
func Serve(tb testing.TB, srv *grpc.Server) *grpc.ClientConn {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(srv.Stop)
	return Dial(tb, lis.Addr().String())
}

// Dial returns a plaintext connection to addr, closed when the test ends.
func Dial(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}
