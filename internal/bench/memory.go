package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// memGoalMiB is issue 5's bound on qgate's RSS under the memory mode.
const memGoalMiB = 100

// MemoryResult is the result of the bounded-memory mode: qgate's resident
// memory while it takes a sustained send rate and two of its subscribers
// are stalled, one reading but never acking, one not reading at all.
type MemoryResult struct {
	Setup      string  `json:"setup"`
	Seconds    float64 `json:"seconds"`
	TargetRate int     `json:"target_rate"`
	Sent       int64   `json:"sent"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// Scope says whose RSS was sampled.
	Scope       string  `json:"scope"`
	StartRSSMiB float64 `json:"start_rss_mib"`
	MaxRSSMiB   float64 `json:"max_rss_mib"`
	EndRSSMiB   float64 `json:"end_rss_mib"`
	// MaxHeapMiB is the largest Go heap (live and unswept objects) of
	// this process seen, when qgate runs in it; 0 otherwise.
	MaxHeapMiB float64 `json:"max_heap_mib,omitempty"`
	Samples    int     `json:"samples"`
	// Delivered counts deliveries to the subscriber that reads but never
	// acks: at most its max in flight when backpressure works.
	Delivered int64 `json:"delivered_to_stalled"`
	// MaxInFlight is the stalled subscribers' max in flight.
	MaxInFlight int    `json:"max_in_flight"`
	Met         bool   `json:"met"`
	Error       string `json:"error,omitempty"`
}

// memory mode settings.
const (
	memBatch   = 10 // messages per Send
	memWorkers = 16 // concurrent Sends at most
)

// runMemory runs the memory mode through qgate. It fails only when ctx
// ends; other failures are in the result.
func (e *env) runMemory(ctx context.Context, body []byte) (*MemoryResult, error) {
	m := &MemoryResult{
		TargetRate:  e.cfg.MemRate,
		MaxInFlight: e.cfg.MemInFlight,
		Setup: fmt.Sprintf("unary Sends of %d x %d-byte messages paced at %d msg/s for %v; "+
			"subscribers at max in flight %d: one reads and never acks, one never reads",
			memBatch, len(body), e.cfg.MemRate, e.cfg.MemDuration, e.cfg.MemInFlight),
	}
	pid := e.qgatePID()
	switch {
	case pid != 0:
		m.Scope = fmt.Sprintf("qgate pid %d", pid)
	case e.inProcess():
		m.Scope = "this process: qgate with the load generator"
		if len(e.local) > 0 {
			m.Scope += " and the in-process nsqd nodes"
		}
		m.Scope += ", an upper bound of qgate's own"
	default:
		m.Error = "qgate runs elsewhere: give --qgate-pid to sample its RSS"
		return m, nil
	}
	err := e.memory(ctx, m, body, pid)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		m.Error = err.Error()
	}
	m.Met = err == nil && m.MaxRSSMiB > 0 && m.MaxRSSMiB <= memGoalMiB
	return m, nil
}

func (e *env) memory(ctx context.Context, m *MemoryResult, body []byte, pid int) error {
	topic := fmt.Sprintf("qb-%s-memory", e.runID)
	defer e.deleteTopic(context.WithoutCancel(ctx), topic)
	mctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel() // ends the stalled streams
		wg.Wait()
	}()
	for _, ch := range []string{"stalled-ack", "stalled-read"} {
		if err := e.createChannel(ctx, topic, ch); err != nil {
			return err
		}
	}
	stream, err := e.openStalled(mctx, topic, "stalled-ack")
	if err != nil {
		return err
	}
	var delivered atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			if resp.GetDelivery() != nil {
				delivered.Add(1)
			}
		}
	}()
	if _, err := e.openStalled(mctx, topic, "stalled-read"); err != nil {
		return err
	}

	start, err := rss(pid)
	if err != nil {
		return err
	}
	m.StartRSSMiB = mib(start)
	sampled := make(chan error, 1)
	samplerCtx, stopSampler := context.WithCancel(mctx)
	go func() { sampled <- m.sample(samplerCtx, pid) }()

	t0 := time.Now()
	sent, sendErr := e.paced(mctx, topic, body, t0, t0.Add(e.cfg.MemDuration))
	m.Seconds = time.Since(t0).Seconds()
	stopSampler()
	sampleErr := <-sampled
	m.Sent = sent
	m.MsgsPerSec = float64(sent) / m.Seconds
	m.Delivered = delivered.Load()
	if m.Delivered > int64(m.MaxInFlight) {
		return fmt.Errorf("bench: memory: %d deliveries to a subscriber that never acks, more than its max in flight %d",
			m.Delivered, m.MaxInFlight)
	}
	if end, err := rss(pid); err == nil {
		m.EndRSSMiB = mib(end)
	}
	return errors.Join(sendErr, sampleErr)
}

// openStalled opens a subscription and reads its opened response; the
// caller decides whether to read on.
func (e *env) openStalled(ctx context.Context, topic, channel string) (qgatev1.QueueService_SubscribeClient, error) {
	stream, err := e.client.Subscribe(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: memory: Subscribe: %w", err)
	}
	err = stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{
		Open: &qgatev1.SubscribeRequest_Open{Topic: topic, Channel: channel, MaxInFlight: uint32(e.cfg.MemInFlight)},
	}})
	if err == nil {
		var resp *qgatev1.SubscribeResponse
		if resp, err = stream.Recv(); err == nil && resp.GetOpened() == nil {
			err = errors.New("first response is not opened")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bench: memory: Subscribe: %w", err)
	}
	return stream, nil
}

// paced sends batches of memBatch messages so that batch k starts at
// t0 + k*memBatch/rate, from up to memWorkers goroutines, until end. It
// returns how many messages were acknowledged and the first error.
func (e *env) paced(ctx context.Context, topic string, body []byte, t0, end time.Time) (int64, error) {
	gw := &gateway{e: e, body: body}
	interval := time.Duration(float64(time.Second) * memBatch / float64(e.cfg.MemRate))
	var ticket, sent atomic.Int64
	var errs errLog
	var wg sync.WaitGroup
	for range memWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := gw.request(topic, memBatch)
			for {
				at := t0.Add(time.Duration(ticket.Add(1)-1) * interval)
				if !at.Before(end) || sleepUntil(ctx, at) != nil {
					return
				}
				if _, err := e.client.Send(ctx, req); err != nil {
					errs.add(err)
					continue
				}
				sent.Add(memBatch)
			}
		}()
	}
	wg.Wait()
	_, err := errs.get()
	return sent.Load(), err
}

// sample records RSS and the Go heap every 100ms until ctx ends.
func (m *MemoryResult) sample(ctx context.Context, pid int) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	for {
		v, err := rss(pid)
		if err != nil {
			return err
		}
		m.Samples++
		m.MaxRSSMiB = max(m.MaxRSSMiB, mib(v))
		if pid == 0 {
			metrics.Read(heap)
		}
		if heap[0].Value.Kind() == metrics.KindUint64 {
			m.MaxHeapMiB = max(m.MaxHeapMiB, mib(int64(heap[0].Value.Uint64())))
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
