package auth_test

import (
	"fmt"

	"google.golang.org/grpc"

	"github.com/qgate/qgate/internal/auth"
)

func ExampleNewStore() {
	store, err := auth.NewStore([]auth.Token{{
		Name:      "orders-service",
		Secret:    "s3cret-s3cret-s3cret",
		Send:      []string{"orders", "orders.*"},
		Subscribe: []string{"orders"},
	}})
	if err != nil {
		panic(err)
	}
	p, ok := store.Lookup("s3cret-s3cret-s3cret")
	fmt.Println(ok, p.Name())
	fmt.Println(p.CanSend("orders.eu"), p.CanSend("orders_secret"), p.CanSubscribe("orders.eu"))
	// Output:
	// true orders-service
	// true false false
}

func ExampleAuthenticator() {
	store, err := auth.NewStore(nil) // filled by the config file and QGATE_TOKEN
	if err != nil {
		panic(err)
	}
	a := auth.New(store)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor()),
	)
	defer srv.Stop()
	// A reload swaps the tokens; streams of revoked tokens end.
	_ = store.Replace(nil)
}
