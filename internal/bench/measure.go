package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

// side is one way to reach the nodes: direct go-nsq (A) or qgate (B).
type side interface {
	// name is "A" or "B".
	name() string
	// sender returns a function that sends one batch of w.batch messages
	// to topic and waits for the result. Worker i calls it from one
	// goroutine.
	sender(topic string, w *workload, worker int) func(context.Context) error
	// openWindow starts an asynchronous sender of w.batch messages a
	// request; complete is called from one goroutine with each request's
	// slot and result.
	openWindow(ctx context.Context, topic string, w *workload, complete func(slot int, err error)) (windowSender, error)
	// prepare writes n messages to topic, as fast as it can, untimed.
	prepare(ctx context.Context, topic string, n int) error
	// subscribe reads topic through channel with at most inFly messages
	// unacknowledged, calling onMsg from one goroutine for each message,
	// until stop.
	subscribe(ctx context.Context, topic, channel string, inFly int, onMsg func()) (stop func(), err error)
}

// windowSender is an open asynchronous sender.
type windowSender interface {
	// send starts one request that will complete with slot.
	send(slot int) error
	// close ends the sender after every request completed (or on failure).
	close()
}

// sample is what one side of one round measured.
type sample struct {
	msgs int64
	wall time.Duration
	cpu  time.Duration
	hist *histogram // nil when latency is not measured
	errs int64
	err  error // the first error
}

// span measures wall and CPU time, and writes a CPU profile when asked.
type span struct {
	t0    time.Time
	c0    time.Duration
	meter cpuMeter
	prof  *os.File
}

// beginSpan starts a span; profile names the CPU profile file or is "".
func (e *env) beginSpan(profile string) (*span, error) {
	s := &span{meter: e.cpu}
	if profile != "" {
		f, err := os.Create(filepath.Join(e.cfg.CPUProfileDir, profile))
		if err != nil {
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
		s.prof = f
	}
	c0, err := s.meter.read()
	if err != nil {
		s.stopProfile()
		return nil, err
	}
	s.c0, s.t0 = c0, time.Now()
	return s, nil
}

// end returns the wall and CPU time since begin.
func (s *span) end() (wall, cpu time.Duration, err error) {
	wall = time.Since(s.t0)
	c1, err := s.meter.read()
	s.stopProfile()
	return wall, c1 - s.c0, err
}

func (s *span) stopProfile() {
	if s.prof != nil {
		pprof.StopCPUProfile()
		s.prof.Close()
		s.prof = nil
	}
}

// profileName is the CPU profile file of a side-round, or "".
func (e *env) profileName(w *workload, sd side, round int) string {
	if e.cfg.CPUProfileDir == "" || round != 1 {
		return ""
	}
	return fmt.Sprintf("%s-%s.pprof", w.name, sd.name())
}

// errLog keeps the first error and counts them all. Safe for concurrent use.
type errLog struct {
	n     atomic.Int64
	mu    sync.Mutex
	first error
}

func (l *errLog) add(err error) {
	if l.n.Add(1) == 1 {
		l.mu.Lock()
		l.first = err
		l.mu.Unlock()
	}
}

func (l *errLog) get() (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n.Load(), l.first
}

// sleepUntil sleeps until t or ctx is done.
func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runClosedLoop runs w.conc workers that each send a batch and wait for
// it, over a warm-up and then the measured duration. Only requests that
// start and end inside the measured interval count.
func (e *env) runClosedLoop(ctx context.Context, w *workload, sd side, topic string, round int) (sample, error) {
	from := time.Now().Add(e.cfg.Warmup)
	to := from.Add(e.cfg.Duration)
	hists := make([]*histogram, w.conc)
	counts := make([]int64, w.conc)
	var errs errLog
	var wg sync.WaitGroup
	for i := range w.conc {
		hists[i] = new(histogram)
		send := sd.sender(topic, w, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := hists[i]
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(to) {
					return
				}
				err := send(ctx)
				t1 := time.Now()
				if err != nil {
					errs.add(err)
					time.Sleep(time.Millisecond) // no hot loop on a dead target
					continue
				}
				if !t0.Before(from) && !t1.After(to) {
					h.record(t1.Sub(t0))
					counts[i] += int64(w.batch)
				}
			}
		}()
	}
	s, err := e.timeInterval(ctx, from, to, e.profileName(w, sd, round))
	wg.Wait()
	if err != nil {
		return s, err
	}
	s.hist = new(histogram)
	for i := range w.conc {
		s.hist.merge(hists[i])
		s.msgs += counts[i]
	}
	s.errs, s.err = errs.get()
	return s, ctx.Err()
}

// timeInterval waits until from, measures until to and returns the wall
// and CPU time of that interval.
func (e *env) timeInterval(ctx context.Context, from, to time.Time, profile string) (sample, error) {
	if err := sleepUntil(ctx, from); err != nil {
		return sample{}, err
	}
	sp, err := e.beginSpan(profile)
	if err != nil {
		return sample{}, err
	}
	waitErr := sleepUntil(ctx, to)
	wall, cpu, err := sp.end()
	return sample{wall: wall, cpu: cpu}, errors.Join(waitErr, err)
}

// window tracks the outstanding requests of a windowed run. Slots are
// handed out by free; starts holds each slot's start time.
type window struct {
	from, to time.Time
	batch    int
	free     chan int
	starts   []atomic.Int64
	// Touched only by the completing goroutine.
	hist histogram
	msgs int64
	errs errLog
}

// complete records the result of slot's request and frees the slot.
func (r *window) complete(slot int, err error) {
	t1 := time.Now()
	t0 := time.Unix(0, r.starts[slot].Load())
	if err != nil {
		r.errs.add(err)
	} else if !t0.Before(r.from) && !t1.After(r.to) {
		r.hist.record(t1.Sub(t0))
		r.msgs += int64(r.batch)
	}
	r.free <- slot
}

// runWindowed keeps w.window requests outstanding over a warm-up and the
// measured duration, then waits for the outstanding ones.
func (e *env) runWindowed(ctx context.Context, w *workload, sd side, topic string, round int) (sample, error) {
	r := &window{
		from:   time.Now().Add(e.cfg.Warmup),
		batch:  w.batch,
		free:   make(chan int, w.window),
		starts: make([]atomic.Int64, w.window),
	}
	r.to = r.from.Add(e.cfg.Duration)
	for i := range w.window {
		r.free <- i
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ws, err := sd.openWindow(wctx, topic, w, r.complete)
	if err != nil {
		return sample{}, err
	}
	sent := make(chan error, 1)
	go func() { sent <- r.sendAll(wctx, ws) }()
	s, err := e.timeInterval(ctx, r.from, r.to, e.profileName(w, sd, round))
	sendErr := <-sent
	if sendErr != nil {
		cancel()
	}
	ws.close()
	if err != nil {
		return s, err
	}
	s.hist = &r.hist
	s.msgs = r.msgs
	s.errs, s.err = r.errs.get()
	if sendErr != nil && s.err == nil {
		s.err = sendErr
	}
	return s, ctx.Err()
}

// sendAll sends while slots are free until the interval ends, then waits
// for every slot to come back; all of it bounded, in case the target hangs.
func (r *window) sendAll(ctx context.Context, ws windowSender) error {
	hung := time.NewTimer(time.Until(r.to) + 30*time.Second)
	defer hung.Stop()
	errHung := errors.New("bench: outstanding requests did not complete within 30s")
	for {
		var slot int
		select {
		case slot = <-r.free:
		case <-ctx.Done():
			return ctx.Err()
		case <-hung.C:
			return errHung
		}
		now := time.Now()
		if !now.Before(r.to) {
			r.free <- slot
			break
		}
		r.starts[slot].Store(now.UnixNano())
		if err := ws.send(slot); err != nil {
			return err
		}
	}
	for range cap(r.free) {
		select {
		case <-r.free:
		case <-ctx.Done():
			return ctx.Err()
		case <-hung.C:
			return errHung
		}
	}
	return nil
}

// runDrain prepares a backlog of Config.Backlog messages (untimed), then
// has one subscriber read all of it. The clock runs from the first message
// to the last but a tail (drainTail), so neither connecting nor the end of
// the backlog is counted: a drain measures the steady delivery rate. At
// the end of a backlog nsqd holds the last partial buffer of a connection
// until its output buffer timeout (250ms by default), which would
// otherwise dominate short drains.
func (e *env) runDrain(ctx context.Context, w *workload, sd side, topic string, round int) (sample, error) {
	const channel = "bench"
	if err := e.createChannel(ctx, topic, channel); err != nil {
		return sample{}, err
	}
	if err := sd.prepare(ctx, topic, e.cfg.Backlog); err != nil {
		return sample{}, fmt.Errorf("bench: prepare backlog: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second+10*e.cfg.Duration)
	defer cancel()
	want := int64(e.cfg.Backlog)
	timed := want - drainTail(want, w.inFly)
	profile := e.profileName(w, sd, round)
	var (
		got     int64
		sp      *span
		spErr   error
		s       sample
		drained = make(chan struct{})
	)
	// onMsg runs on the subscriber's one goroutine.
	stop, err := sd.subscribe(dctx, topic, channel, w.inFly, func() {
		got++
		switch got {
		case 1:
			sp, spErr = e.beginSpan(profile)
		case timed:
			if sp != nil {
				s.wall, s.cpu, spErr = sp.end()
			}
		}
		if got == want {
			close(drained)
		}
	})
	if err != nil {
		return sample{}, err
	}
	select {
	case <-drained:
	case <-dctx.Done():
	}
	stop() // waits for onMsg's goroutine: got, sp and s are final
	if got < want {
		if got < timed && sp != nil {
			s.wall, s.cpu, _ = sp.end()
		}
		s.err = fmt.Errorf("bench: drained %d of %d messages before the timeout", got, want)
		s.errs = 1
	}
	s.msgs = max(min(got, timed)-1, 0) // those after the first
	return s, errors.Join(spErr, ctx.Err())
}

// drainTail is how many messages at the end of a backlog of n read at max
// in flight inFly are not timed: two windows, at most a tenth of n.
func drainTail(n int64, inFly int) int64 {
	return min(n/10, 2*int64(inFly))
}
