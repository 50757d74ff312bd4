package nsq

import (
	"context"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestRetryPolicyDeadline: with a retry policy, a delivery whose ack
// deadline passes comes back only after the policy's backoff, from
// whichever copy and at whichever of two subscriptions of the channel:
// its standby copy, due long before, waits for the hold that covers the
// deadline and the backoff. Without a policy it comes back at once (the
// control).
func TestRetryPolicyDeadline(t *testing.T) {
	for _, tc := range []struct {
		name    string
		retry   *backends.RetryPolicy
		minWait time.Duration // least time from the first delivery to the second; negative: most
	}{
		{"policy", &backends.RetryPolicy{Min: 3 * time.Second, Max: 3 * time.Second}, 3800 * time.Millisecond},
		// The control: without a policy it comes back sooner than the
		// policy's bound (else the bound proves nothing).
		{"none", nil, -3800 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := nsqdtest.StartNodes(t, 2)
			// Holds start at a quarter of the standby delay: the first
			// delivery records one before its deadline.
			p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.StandbyDelay = 800 * time.Millisecond })
			const topic = "retry"
			createChannels(t, p, localHTTP(nodes), topic, "c")
			type got struct {
				d  *backends.Delivery
				at time.Time
			}
			ch := make(chan got, 10)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range 2 {
				sub := subscribeOpts(t, p, backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 10,
					AckDeadline: time.Second, Retry: tc.retry})
				go func() {
					for {
						d, err := sub.Receive(ctx)
						if err != nil {
							return
						}
						ch <- got{d, time.Now()}
					}
				}()
			}
			if err := sendReplicas(context.Background(), p, topic, 2, "m1"); err != nil {
				t.Fatal(err)
			}
			next := func() got {
				t.Helper()
				select {
				case g := <-ch:
					return g
				case <-time.After(20 * time.Second):
					t.Fatal("no delivery")
				}
				return got{}
			}
			first := next() // left unacked: its deadline passes
			second := next()
			switch wait := second.at.Sub(first.at); {
			case tc.minWait >= 0 && wait < tc.minWait:
				t.Errorf("redelivered %v after the first delivery (attempt %d), want at least %v", wait, second.d.Attempt, tc.minWait)
			case tc.minWait < 0 && wait >= -tc.minWait:
				t.Errorf("without a policy redelivered %v after the first delivery, want less than %v", wait, -tc.minWait)
			}
			if tc.retry == nil {
				return
			}
			if err := second.d.Acker.Ack(); err != nil {
				t.Fatal(err)
			}
			// Acked: neither copy comes back (the standby finished).
			cancel()
			sub := subscribe(t, p, topic, "c", 10)
			if d := receiveOrEmpty(t, sub, localHTTP(nodes), topic, "c", 20*time.Second); d != nil {
				t.Errorf("delivered again after its ack: %s attempt %d", d.ID, d.Attempt)
			}
		})
	}
}
