package main

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// defaultAddr is where the client commands find qgate, serve's default.
const defaultAddr = "127.0.0.1:7070"

// dial connects to qgate at addr. The connection is made lazily: the first
// RPC reports an unreachable server.
func dial(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return conn, nil
}
