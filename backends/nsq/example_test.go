package nsq_test

import (
	"context"
	"log"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/health"
)

// A failover pool: all sends go to the primary while it is up, to the
// backup when it is not, and back to the primary once it has stayed up for
// the hold-down time. Subscriptions read both nodes.
func Example() {
	groups, err := nsq.GroupsForMode(nsq.ModeFailover, []nsq.NodeConfig{
		{Name: "primary", TCPAddr: "10.0.0.1:4150", HTTPAddr: "10.0.0.1:4151"},
		{Name: "backup", TCPAddr: "10.0.0.2:4150", HTTPAddr: "10.0.0.2:4151"},
	})
	if err != nil {
		log.Fatal(err)
	}
	pool, err := nsq.New(nsq.Config{
		Groups:       groups,
		Check:        health.Config{Interval: time.Second, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2},
		FailbackHold: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	msg := &backends.Message{ID: "m1", Body: []byte("hello"), PublishTime: time.Now()}
	if err := pool.Send(ctx, "orders", []*backends.Message{msg}, backends.SendOptions{}); err != nil {
		log.Print(err) // backends.ErrUnavailable when no node could take it
	}
	for _, st := range pool.Nodes() {
		log.Printf("%s %s active=%v", st.Name, st.State, st.Active)
	}
}
