package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qgate/qgate/backends"
)

// ErrStopped is returned by Probe and Stats after Stop.
var ErrStopped = errors.New("health: monitor stopped")

// ChangeFunc is told of every state change of a Monitor's node: the state
// before, the state after, and a snapshot taken right after the change.
//
// It is called from the monitor's goroutine, one call at a time and in the
// order of the changes, with no lock held; a change caused by Probe or Eject
// is delivered by that goroutine too, never by the caller of Probe or Eject
// (so a caller may hold its own locks while calling them). It must not block
// for long: checks of the node wait for it. Changes that happen before Start
// are delivered after Start; changes not yet delivered at Stop are dropped.
type ChangeFunc func(old, now backends.NodeState, snap Snapshot)

// Snapshot is the health of one node at one moment.
type Snapshot struct {
	// State is NodeUnknown before the first check, then NodeUp or NodeDown.
	State backends.NodeState
	// Since is when State was entered (the Monitor's creation for Unknown).
	Since time.Time
	// LastCheck is when the last check started; zero before the first.
	LastCheck time.Time
	// Latency is the last check's /ping round trip (up to the timeout).
	Latency time.Duration
	// LastError is the last check's or ejection's error, nil after a passed
	// check.
	LastError error
	// Passes and Fails count consecutive passed and failed checks; at most
	// one is non-zero. Ejections do not count: they are the other signal.
	Passes, Fails int
	// CheckState is the active checks' own verdict (fall/rise over /ping),
	// whatever the data path says.
	CheckState backends.NodeState
	// Reason says why State is Down: OutDataPath while ejected for
	// data-path failures (whatever the checks say), else OutHealthCheck.
	// OutNone while not Down.
	Reason backends.OutReason
	// EjectedUntil is when the current data-path ejection ends (the node
	// is then re-admitted on probation if its checks pass); zero while not
	// ejected.
	EjectedUntil time.Time
	// Ejections is the ejection count: how many times BaseEjection the next
	// ejection lasts, minus one. Zero for a node in good standing; above
	// zero on probation.
	Ejections int
	// Stats is the last /stats fetched; zero if none yet.
	Stats Stats
}

// Stats is the part of nsqd's /stats that a pool reports.
type Stats struct {
	// Time is when the stats were fetched; zero if never.
	Time time.Time
	// Depth counts queued messages over all topics and channels (memory and
	// disk), as nsqd reports them.
	Depth uint64
	// InFlight counts messages sent to consumers and not yet finished.
	InFlight uint64
}

// Option configures a Monitor.
type Option func(*options)

type options struct {
	client     *http.Client
	logger     *slog.Logger
	name       string
	statsEvery int
	eject      EjectConfig
}

// WithHTTPClient sets the client of checks and /stats. Default: a client of
// its own with keep-alives (the timeout comes from Config.Timeout).
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithLogger sets the logger of state changes. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithName names the node in logs. Default the HTTP address.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithEjection configures the data-path signal (DataFailure, Eject).
// Default: EjectConfig's defaults.
func WithEjection(c EjectConfig) Option { return func(o *options) { o.eject = c } }

// WithStatsEvery fetches /stats after every n-th passed check; 0 never
// (Stats still fetches on demand). Default 5.
func WithStatsEvery(n int) Option { return func(o *options) { o.statsEvery = n } }

// Monitor checks one nsqd node. It owns one goroutine, from Start to Stop.
// All methods are safe for concurrent use.
type Monitor struct {
	httpAddr  string
	cfg       Config
	onChange  ChangeFunc
	opts      options
	ownClient bool

	life     context.Context // done at Stop; bounds every check
	stopLife context.CancelFunc
	kick     chan struct{} // buffered 1: deliver queued changes
	checkReq chan struct{} // buffered 1: check at once
	done     chan struct{} // closed when the goroutine exits

	// failing is set while the data path has unreset failures, so that
	// DataSuccess, called on every send, takes no lock in the common case.
	failing atomic.Bool

	mu      sync.Mutex
	machine Machine // the checks' signal
	ejector Ejector // the data path's signal
	snap    Snapshot
	pending []change
	passed  int // passed checks so far, to pace /stats
	started bool
}

type change struct {
	old, now backends.NodeState
	snap     Snapshot
}

// New returns a Monitor of the nsqd whose HTTP address (host:port) is
// httpAddr. It checks nothing until Probe or Start. cfg takes defaults for
// zero fields and must be valid. onChange may be nil.
func New(httpAddr string, cfg Config, onChange ChangeFunc, opts ...Option) (*Monitor, error) {
	if httpAddr == "" {
		return nil, errors.New("health: empty HTTP address")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	o := options{statsEvery: 5, name: httpAddr}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.eject.Validate(); err != nil {
		return nil, err
	}
	o.eject = o.eject.WithDefaults()
	m := &Monitor{
		httpAddr: httpAddr,
		cfg:      cfg,
		onChange: onChange,
		opts:     o,
		kick:     make(chan struct{}, 1),
		checkReq: make(chan struct{}, 1),
		done:     make(chan struct{}),
		machine:  Machine{Fall: cfg.Fall, Rise: cfg.Rise},
		ejector:  Ejector{Config: o.eject},
		snap:     Snapshot{State: backends.NodeUnknown, Since: time.Now()},
	}
	if m.opts.logger == nil {
		m.opts.logger = slog.Default()
	}
	if m.opts.client == nil {
		// A client of our own, so that Stop leaves no goroutine behind.
		// Every check dials anew (no keep-alive): a check must prove that
		// the node accepts new connections, as publishers and consumers
		// need. nsqd's Exit closes its listeners but not the HTTP
		// connections already open, so an exited in-process nsqd (and a
		// node whose listener died) kept answering /ping with 200 on a
		// kept-alive connection and stayed Up forever. The cost is one TCP
		// handshake per Interval.
		m.opts.client = &http.Client{Transport: &http.Transport{
			Proxy:              nil,
			DisableKeepAlives:  true,
			DisableCompression: true,
		}}
		m.ownClient = true
	}
	m.life, m.stopLife = context.WithCancel(context.Background())
	return m, nil
}

// Start starts the monitor's goroutine: it checks at once, then every
// Interval ± Jitter, until Stop or until ctx is done. Start after Start or
// Stop does nothing.
func (m *Monitor) Start(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.life.Err() != nil {
		return
	}
	m.started = true
	runCtx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(m.life, cancel)
	go func() {
		defer close(m.done)
		defer stop()
		defer cancel()
		m.run(runCtx)
	}()
}

// Stop stops the goroutine and waits for it to exit, including a running
// check or callback; it must not be called from the ChangeFunc. Safe twice,
// and before Start.
func (m *Monitor) Stop() {
	m.mu.Lock()
	started := m.started
	m.stopLife()
	m.mu.Unlock()
	if started {
		<-m.done
	}
	if m.ownClient {
		m.opts.client.CloseIdleConnections()
	}
}

// run is the monitor's loop: check when the timer fires or a check is
// asked for, deliver queued changes after every event, and exit when ctx
// is done. Checks start every Interval (± jitter) from the start of the
// previous one, as HAProxy's do, so a dead node is noticed within about
// Fall×Interval + Timeout; a check never overlaps the previous one.
//
// It also ends data-path ejections on time: readmit fires when the current
// ejection ends, and the node's state is recomputed (Up again if its checks
// pass, on probation).
func (m *Monitor) run(ctx context.Context) {
	timer := time.NewTimer(0) // the first check runs at once
	defer timer.Stop()
	readmit := time.NewTimer(time.Hour)
	defer readmit.Stop()
	for {
		m.deliver()
		readmit.Reset(m.untilReadmit())
		select {
		case <-ctx.Done():
			return
		case <-readmit.C:
			m.readmit()
		case <-m.kick:
		case <-m.checkReq:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			start := time.Now()
			m.check(ctx)
			timer.Reset(m.nextInterval() - time.Since(start))
		case <-timer.C:
			start := time.Now()
			m.check(ctx)
			timer.Reset(m.nextInterval() - time.Since(start))
		}
	}
}

// nextInterval is Interval ± Jitter×Interval, uniformly.
func (m *Monitor) nextInterval() time.Duration {
	d := m.cfg.Interval
	if m.cfg.Jitter > 0 {
		j := (rand.Float64()*2 - 1) * m.cfg.Jitter * float64(d)
		d += time.Duration(j)
	}
	return max(d, time.Millisecond)
}

// deliver calls onChange for every queued change, without the lock.
func (m *Monitor) deliver() {
	for {
		m.mu.Lock()
		if len(m.pending) == 0 || m.life.Err() != nil {
			m.pending = nil
			m.mu.Unlock()
			return
		}
		c := m.pending[0]
		m.pending = m.pending[1:]
		m.mu.Unlock()
		if m.onChange != nil {
			m.onChange(c.old, c.now, c.snap)
		}
	}
}

// wake makes the goroutine deliver queued changes soon.
func (m *Monitor) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// check runs one scheduled check and, every statsEvery passes, a /stats
// fetch.
func (m *Monitor) check(ctx context.Context) {
	err := m.Probe(ctx)
	if ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	n := m.opts.statsEvery
	fetch := err == nil && n > 0 && (m.passed-1)%n == 0
	m.mu.Unlock()
	if fetch {
		if _, err := m.Stats(ctx); err != nil && ctx.Err() == nil {
			m.opts.logger.Debug("nsqd stats", "node", m.opts.name, "err", err)
		}
	}
}

// Probe runs one check now, in the caller's goroutine, bounded by
// Config.Timeout and ctx, and feeds its result to the state machine, as a
// scheduled check would. It returns the check's error (nil if it passed).
// If ctx is done or the Monitor stopped before the check ends, the result is
// not recorded and Probe returns ctx's error or ErrStopped.
// A pool calls it for every node before Start to begin with real states.
func (m *Monitor) Probe(ctx context.Context) error {
	if m.life.Err() != nil {
		return ErrStopped
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.life, cancel)()
	start := time.Now()
	err := m.ping(ctx)
	latency := time.Since(start)
	if m.life.Err() != nil {
		return ErrStopped
	}
	if cerr := context.Cause(ctx); cerr != nil {
		return cerr
	}
	m.record(start, latency, err)
	return err
}

// ping is one GET /ping bounded by the check timeout.
func (m *Monitor) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeoutCause(ctx, m.cfg.Timeout, errCheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.httpAddr+"/ping", nil)
	if err != nil {
		return fmt.Errorf("health: ping %s: %w", m.httpAddr, err)
	}
	resp, err := m.opts.client.Do(req)
	if err != nil {
		if errors.Is(context.Cause(ctx), errCheckTimeout) {
			return fmt.Errorf("health: ping %s: no answer within %v", m.httpAddr, m.cfg.Timeout)
		}
		return fmt.Errorf("health: ping %s: %w", m.httpAddr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		if errors.Is(context.Cause(ctx), errCheckTimeout) {
			return fmt.Errorf("health: ping %s: no answer within %v", m.httpAddr, m.cfg.Timeout)
		}
		return fmt.Errorf("health: ping %s: reading answer: %w", m.httpAddr, err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "OK" {
		return fmt.Errorf("health: ping %s: status %d, body %q", m.httpAddr, resp.StatusCode, body)
	}
	return nil
}

var errCheckTimeout = errors.New("health: check timeout")

// record feeds one check result to the machine and queues a change.
func (m *Monitor) record(start time.Time, latency time.Duration, err error) {
	m.mu.Lock()
	old := m.snap.State
	if _, checks := m.machine.Observe(err == nil); checks == backends.NodeDown {
		m.ejector.Confirmed(time.Now())
	}
	now := m.stateLocked(time.Now())
	m.snap.LastCheck = start
	m.snap.Latency = latency
	m.snap.LastError = err
	if err == nil {
		m.passed++
	}
	changed := m.transitionLocked(old, now)
	m.mu.Unlock()
	if changed {
		m.wake()
	}
}

// stateLocked is the decision of the two signals at now: Down while
// ejected for data-path failures, whatever the checks say; else what the
// checks say. m.mu is held.
func (m *Monitor) stateLocked(now time.Time) backends.NodeState {
	if m.ejector.Ejected(now) {
		return backends.NodeDown
	}
	return m.machine.State()
}

// transitionLocked updates the snapshot after a step of either signal and
// queues the change, if any. m.mu is held.
func (m *Monitor) transitionLocked(old, now backends.NodeState) bool {
	t := time.Now()
	m.snap.State = now
	m.snap.Passes, m.snap.Fails = m.machine.Counts()
	m.snap.CheckState = m.machine.State()
	m.snap.Ejections = m.ejector.Count(t)
	m.snap.EjectedUntil, m.snap.Reason = time.Time{}, backends.OutNone
	switch {
	case m.ejector.Ejected(t):
		m.snap.EjectedUntil, m.snap.Reason = m.ejector.Until(), backends.OutDataPath
	case now == backends.NodeDown:
		m.snap.Reason = backends.OutHealthCheck
	}
	if old == now {
		return false
	}
	m.snap.Since = time.Now()
	m.pending = append(m.pending, change{old: old, now: now, snap: m.snap})
	m.opts.logger.Info("nsqd node state", "node", m.opts.name, "from", old.String(), "to", now.String(), "err", m.snap.LastError)
	return true
}

// CheckNow asks the monitor's goroutine to check at once instead of
// waiting for the next interval. It does not block, and does nothing before
// Start.
func (m *Monitor) CheckNow() {
	select {
	case m.checkReq <- struct{}{}:
	default:
	}
}

// DataFailure records one data-path failure (a send that timed out or
// failed at the connection level) and reports whether it calls for an
// ejection: Consecutive failures in a row, or the first one on probation.
// It ejects nothing itself: the caller, which knows how many nodes are out
// already, calls Eject.
func (m *Monitor) DataFailure() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failing.Store(true)
	return m.ejector.Failure(time.Now())
}

// DataSuccess records one data-path success, which resets the consecutive
// failures. It is cheap when there are none (every send calls it).
func (m *Monitor) DataSuccess() {
	if !m.failing.Load() {
		return
	}
	m.mu.Lock()
	m.ejector.Success()
	m.failing.Store(false)
	m.mu.Unlock()
}

// Eject ejects the node for data-path failures: it is Down at once, for
// BaseEjection times its ejection count (capped at MaxEjection), and passed
// checks do not bring it back meanwhile; when the ejection ends it is Up
// again if its checks pass, on probation. err is recorded as the last
// error. It returns when the ejection ends, and false if the node was
// already ejected (which changes nothing).
func (m *Monitor) Eject(err error) (until time.Time, ejected bool) {
	if err == nil {
		err = errors.New("health: ejected")
	}
	m.mu.Lock()
	now := time.Now()
	if m.ejector.Ejected(now) {
		until = m.ejector.Until()
		m.mu.Unlock()
		return until, false
	}
	old := m.snap.State
	until = m.ejector.Eject(now)
	m.failing.Store(false)
	m.snap.LastError = err
	changed := m.transitionLocked(old, backends.NodeDown)
	m.mu.Unlock()
	if changed {
		m.wake()
	}
	m.opts.logger.Warn("nsqd node ejected for data-path failures", "node", m.opts.name,
		"until", until.Format(time.RFC3339Nano), "ejections", m.Snapshot().Ejections, "err", err)
	return until, true
}

// untilReadmit returns how long until the current ejection ends; an hour
// when there is none (the run loop's timer needs some value).
func (m *Monitor) untilReadmit() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if !m.ejector.Ejected(now) {
		return time.Hour
	}
	return m.ejector.Until().Sub(now)
}

// readmit ends an ejection whose time is up: the node takes the checks'
// state again.
func (m *Monitor) readmit() {
	m.mu.Lock()
	changed := m.transitionLocked(m.snap.State, m.stateLocked(time.Now()))
	m.mu.Unlock()
	if changed {
		m.wake()
	}
}

// State returns the node's current state.
func (m *Monitor) State() backends.NodeState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap.State
}

// Snapshot returns the node's current health.
func (m *Monitor) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}
