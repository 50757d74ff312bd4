package client

import (
	"context"
	"sync"
)

// flowController bounds outstanding messages and bytes. acquire blocks (or
// fails) while the bounds are reached; release gives room back. A single
// item larger than the byte bound is admitted when nothing else is
// outstanding, so it cannot block forever. A bound of 0 or less is no bound.
type flowController struct {
	maxCount, maxBytes int

	mu      sync.Mutex
	count   int
	bytes   int
	changed chan struct{} // closed and replaced on every release
}

func newFlowController(maxCount, maxBytes int) *flowController {
	return &flowController{maxCount: maxCount, maxBytes: maxBytes, changed: make(chan struct{})}
}

// fits reports whether count more items of n bytes fit; called with mu
// held.
func (f *flowController) fits(count, n int) bool {
	if f.count == 0 {
		return true
	}
	if f.maxCount > 0 && f.count+count > f.maxCount {
		return false
	}
	return f.maxBytes <= 0 || f.bytes+n <= f.maxBytes
}

// acquire takes room for count items of n bytes in all. With block false
// it fails at once with ErrFlowControl when there is none; otherwise it
// waits for room or for ctx to end (returning ctx's error).
func (f *flowController) acquire(ctx context.Context, count, n int, block bool) error {
	for {
		f.mu.Lock()
		if f.fits(count, n) {
			f.count += count
			f.bytes += n
			f.mu.Unlock()
			return nil
		}
		changed := f.changed
		f.mu.Unlock()
		if !block {
			return ErrFlowControl
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives back count items of n bytes in all.
func (f *flowController) release(count, n int) {
	f.mu.Lock()
	f.count -= count
	f.bytes -= n
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// waitEmpty waits until nothing is outstanding or ctx ends.
func (f *flowController) waitEmpty(ctx context.Context) error {
	for {
		f.mu.Lock()
		empty, changed := f.count == 0, f.changed
		f.mu.Unlock()
		if empty {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// outstanding returns the items and bytes held now.
func (f *flowController) outstanding() (count, bytes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count, f.bytes
}
