// The Go client library as the load (S21): one client.Client over every
// qgate instance of the run (a static list, round-robin), a Publisher at a
// fixed rate and a Subscriber that acks at once, both recorded in the
// ledger like the raw-gRPC load.

package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qgate/qgate/client"
)

// libLoad is the library's side of a run.
type libLoad struct {
	rate int
	c    *client.Client

	pubErrors atomic.Int64
	mu        sync.Mutex
	errs      []string    // the first failed results
	got       []time.Time // the subscriber's deliveries, in order
}

// AddLibrary makes the run's load the Go client library's: a Publisher at
// rate msg/s and a Subscriber on the run's channel (besides Subscribers
// raw ones, if any). Call from Setup.
func (h *Harness) AddLibrary(rate int) { h.lib = &libLoad{rate: rate} }

// startLibrary connects the library to every instance and starts its
// Subscriber (until runCtx ends), waiting until its stream is open.
func (h *Harness) startLibrary(runCtx context.Context) error {
	l := h.lib
	addrs := make([]string, len(h.inst))
	for i, in := range h.inst {
		addrs[i] = in.gc.Addr
	}
	c, err := client.New(runCtx, strings.Join(addrs, ","))
	if err != nil {
		return fmt.Errorf("chaos: client library: %w", err)
	}
	l.c = c
	opened := make(chan struct{})
	var once sync.Once
	sub := c.Subscriber(h.topic, "chaos", client.ReceiveSettings{
		MaxOutstandingMessages: int(h.Sc.MaxInFlight), AckDeadline: h.Sc.AckDeadline,
		OnStreamError: func(err error) { h.log.Info("chaos: library subscriber stream", "err", err) },
	})
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer c.Close()
		err := sub.Receive(runCtx, func(_ context.Context, d *client.Delivery) {
			once.Do(func() { close(opened) })
			now := time.Now()
			h.ledger.RecordDelivery(DeliveryRecord{ID: string(d.Body), MessageID: d.ID, Attempt: d.Attempt,
				At: now, Acked: true, Subscriber: "lib"})
			l.mu.Lock()
			l.got = append(l.got, now)
			l.mu.Unlock()
			d.Ack()
		})
		if err != nil && runCtx.Err() == nil {
			h.log.Error("chaos: library subscriber ended", "err", err)
		}
	}()
	// The stream is open once a message comes back: send one.
	r := c.Publisher(h.topic, client.PublishSettings{Replicas: h.replicas()}).Publish(runCtx, &client.Message{ID: "lib-open", Body: []byte("lib-open")})
	start := time.Now()
	id, err := r.Get(runCtx)
	o, code := classify(err)
	h.ledger.RecordSend(SendRecord{IDs: []string{"lib-open"}, MessageIDs: []string{id}, Outcome: o, Code: code, Start: start, End: time.Now()})
	select {
	case <-opened:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("chaos: library subscriber: nothing received 10s after a publish (%v)", err)
	}
}

// runLibraryPublisher publishes rate msg/s until ctx ends, each message
// with its body as its client-chosen id, and records every result.
func (h *Harness) runLibraryPublisher(ctx context.Context) {
	l := h.lib
	pub := l.c.Publisher(h.topic, client.PublishSettings{Replicas: h.replicas()})
	defer pub.Stop()
	t := time.NewTicker(time.Second / time.Duration(max(l.rate, 1)))
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for seq := 1; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id := fmt.Sprintf("lib-%06d", seq)
		start := time.Now()
		// Not ctx: a message given to the Publisher is seen through to
		// its result (its own deadline), as the raw publishers' are.
		r := pub.Publish(context.WithoutCancel(ctx), &client.Message{ID: id, Body: []byte(id)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			mid, err := r.Get(context.Background())
			o, code := classify(err)
			if err != nil {
				if l.pubErrors.Add(1) <= maxListed {
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Sprintf("%s: %v", id, err))
					l.mu.Unlock()
				}
			}
			h.ledger.RecordSend(SendRecord{IDs: []string{id}, MessageIDs: []string{mid}, Outcome: o, Code: code, Start: start, End: time.Now()})
		}()
	}
}

// measureLibrary reports the library's publish errors and the longest
// time its subscriber received nothing while the load ran.
func (h *Harness) measureLibrary(r *Report, loadStart, loadEnd time.Time) {
	l := h.lib
	l.mu.Lock()
	got := slices.Clone(l.got)
	errs := slices.Clone(l.errs)
	l.mu.Unlock()
	r.AddText("publish errors", float64(l.pubErrors.Load()), "", fmt.Sprintf("%d %s", l.pubErrors.Load(), strings.Join(errs, "; ")))
	var gap time.Duration
	var at time.Time
	prev := loadStart
	for _, g := range got {
		if g.Before(loadStart) || g.After(loadEnd) {
			continue
		}
		if d := g.Sub(prev); d > gap {
			gap, at = d, prev
		}
		prev = g
	}
	if d := loadEnd.Sub(prev); d > gap {
		gap, at = d, prev
	}
	r.AddText("longest receive gap", gap.Seconds(), "s", fmt.Sprintf("%.2f s (from load+%.1fs)", gap.Seconds(), at.Sub(loadStart).Seconds()))
}
