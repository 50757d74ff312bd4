package client_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/qgate/qgate/client"
)

// exampleGateway starts a qgate over one in-process nsqd, as
// `qgate serve` does with its embedded default, and returns its address.
func exampleGateway() (addr string, stop func()) {
	b, err := startBackend(1, nil)
	if err != nil {
		log.Fatal(err)
	}
	g, err := startGateway(b, gatewayOptions{})
	if err != nil {
		log.Fatal(err)
	}
	return g.addr, func() { _ = g.stop(); b.close() }
}

// Example publishes two messages and receives them.
func Example() {
	addr, stop := exampleGateway()
	defer stop()
	ctx := context.Background()

	c, err := client.New(ctx, addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p := c.Publisher("greetings", client.PublishSettings{})
	for _, body := range []string{"hello", "world"} {
		if _, err := p.Publish(ctx, &client.Message{Body: []byte(body)}).Get(ctx); err != nil {
			log.Fatal(err)
		}
	}
	p.Stop()

	ctx, cancel := context.WithCancel(ctx)
	var n atomic.Int32
	s := c.Subscriber("greetings", "printer", client.ReceiveSettings{NumGoroutines: 1})
	err = s.Receive(ctx, func(_ context.Context, d *client.Delivery) {
		fmt.Println(string(d.Body))
		d.Ack()
		if n.Add(1) == 2 {
			cancel()
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// hello
	// world
}

// ExamplePublisher_Publish publishes without waiting for each result, as
// fast code does, and collects the results afterwards.
func ExamplePublisher_Publish() {
	addr, stop := exampleGateway()
	defer stop()
	ctx := context.Background()
	c, err := client.New(ctx, addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p := c.Publisher("numbers", client.PublishSettings{Timeout: 30 * time.Second})
	defer p.Stop()
	var results []*client.PublishResult
	for i := range 1000 {
		results = append(results, p.Publish(ctx, &client.Message{
			Body:       fmt.Appendf(nil, "%d", i),
			Attributes: map[string]string{"source": "example"},
		}))
	}
	failed := 0
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			failed++
		}
	}
	fmt.Println(len(results), "published,", failed, "failed")
	// Output: 1000 published, 0 failed
}

// ExampleSubscriber_Receive nacks what it cannot handle yet: the message
// comes back later.
func ExampleSubscriber_Receive() {
	addr, stop := exampleGateway()
	defer stop()
	ctx := context.Background()
	c, err := client.New(ctx, addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p := c.Publisher("jobs", client.PublishSettings{})
	if _, err := p.Publish(ctx, &client.Message{Body: []byte("job 1")}).Get(ctx); err != nil {
		log.Fatal(err)
	}
	p.Stop()

	ctx, cancel := context.WithCancel(ctx)
	s := c.Subscriber("jobs", "workers", client.ReceiveSettings{AckDeadline: 30 * time.Second})
	err = s.Receive(ctx, func(_ context.Context, d *client.Delivery) {
		if d.Attempt == 1 {
			fmt.Printf("%s: attempt %d, not yet\n", d.Body, d.Attempt)
			d.NackWithDelay(10 * time.Millisecond)
			return
		}
		fmt.Printf("%s: attempt %d, done\n", d.Body, d.Attempt)
		d.Ack()
		cancel()
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// job 1: attempt 1, not yet
	// job 1: attempt 2, done
}

// ExampleNew connects to two qgate instances over mutual TLS with a
// bearer token from the environment.
func ExampleNew() {
	cert, err := tls.LoadX509KeyPair("client.pem", "client-key.pem")
	if err != nil {
		log.Print(err)
		return
	}
	c, err := client.New(context.Background(), "qgate-a:7070,qgate-b:7070",
		client.WithTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		client.WithTokenFunc(func(context.Context) (string, error) { return os.Getenv("QGATE_TOKEN"), nil }),
	)
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()
}
