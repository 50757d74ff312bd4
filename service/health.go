package service

import (
	"context"
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// WritablePool is what Health needs from a node pool (backends/nsq.Pool has
// it).
type WritablePool interface {
	// Writable reports whether some node can take sends now.
	Writable() bool
	// Watch is as in Pool.
	Watch(ctx context.Context) <-chan backends.NodeEvent
}

// HealthServices are the service names Health sets: the server as a whole
// ("") and QueueService.
var HealthServices = []string{"", qgatev1.QueueService_ServiceDesc.ServiceName}

// Health drives a grpc health server from a pool: SERVING while some node can
// take writes, NOT_SERVING otherwise, re-evaluated on every node event. It
// owns one goroutine, stopped by Stop.
type Health struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartHealth sets the status of HealthServices on hs from p now and on
// every change until Stop. When the pool's watch ends (the pool closed), the
// status becomes NOT_SERVING. For shutdown, call hs.Shutdown (every service
// NOT_SERVING, later updates ignored) and Stop.
func StartHealth(hs *health.Server, p WritablePool) *Health {
	ctx, cancel := context.WithCancel(context.Background())
	h := &Health{cancel: cancel}
	events := p.Watch(ctx)
	set(hs, p.Writable())
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			select {
			case _, ok := <-events:
				if !ok {
					if ctx.Err() == nil {
						set(hs, false)
					}
					return
				}
				// Drain what is queued: only the latest state matters.
				for more := true; more; {
					select {
					case _, ok = <-events:
						more = ok
					default:
						more = false
					}
				}
				if ctx.Err() != nil {
					return
				}
				set(hs, ok && p.Writable())
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return h
}

func set(hs *health.Server, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, name := range HealthServices {
		hs.SetServingStatus(name, st)
	}
}

// Stop stops the goroutine and waits for it. The status stays as it was.
// Safe to call more than once.
func (h *Health) Stop() {
	h.cancel()
	h.wg.Wait()
}
