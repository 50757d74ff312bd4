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
	// Passes and Fails count consecutive passed and failed checks (an
	// ejection counts as a failure); at most one is non-zero.
	Passes, Fails int
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
}

// WithHTTPClient sets the client of checks and /stats. Default: a client of
// its own with keep-alives (the timeout comes from Config.Timeout).
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithLogger sets the logger of state changes. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithName names the node in logs. Default the HTTP address.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithStatsEvery fetches /stats after every n-th passed check; 0 never
// (Stats still fetches on demand). Default 5.
func WithStatsEvery(n int) Option { return func(o *options) { o.statsEvery = n } }

// Monitor checks one nsqd node. It owns one goroutine, from Start to Stop.
// All methods are safe for concurrent use.
type Monitor struct {
	httpAddr string
	cfg      Config
	onChange ChangeFunc
	opts     options

	kick chan struct{} // buffered 1: check now, or deliver queued changes

	mu       sync.Mutex
	machine  Machine
	snap     Snapshot
	pending  []change
	checks   int
	started  bool
	stopped  bool
	cancel   context.CancelFunc
	done     chan struct{}
	probeCtx context.Context // cancelled by Stop
	stopAll  context.CancelFunc
}

type change struct {
	old, now backends.NodeState
	snap     Snapshot
}

// New returns a Monitor of the nsqd whose HTTP address (host:port) is
// httpAddr. It checks nothing until Probe or Start. cfg takes defaults for
// zero fields and must be valid. onChange may be nil.
func New(httpAddr string, cfg Config, onChange ChangeFunc, opts ...Option) (*Monitor, error) {
	panic("TODO")
}

// Start starts the monitor's goroutine: it checks at once, then every
// Interval ± Jitter, until Stop or until ctx is done. Start after Start or
// Stop does nothing.
func (m *Monitor) Start(ctx context.Context) { panic("TODO") }

// Stop stops the goroutine and waits for it to exit, including a running
// check or callback. Safe twice, and before Start.
func (m *Monitor) Stop() { panic("TODO") }

// Probe runs one check now, in the caller's goroutine, bounded by
// Config.Timeout and ctx, and feeds its result to the state machine, as a
// scheduled check would. It returns the check's error (nil if it passed).
// A pool calls it for every node before Start to begin with real states.
func (m *Monitor) Probe(ctx context.Context) error { panic("TODO") }

// CheckNow asks the monitor's goroutine to check at once instead of
// waiting for the next interval. It does not block.
func (m *Monitor) CheckNow() { panic("TODO") }

// Eject marks the node Down at once (a passive signal such as a failed
// publish); it then needs Rise passed checks to come back. err is recorded
// as the last error.
func (m *Monitor) Eject(err error) { panic("TODO") }

// State returns the node's current state.
func (m *Monitor) State() backends.NodeState { panic("TODO") }

// Snapshot returns the node's current health.
func (m *Monitor) Snapshot() Snapshot { panic("TODO") }

// Stats fetches nsqd's /stats now, bounded by Config.Timeout and ctx, and
// records it in the Snapshot.
func (m *Monitor) Stats(ctx context.Context) (Stats, error) { panic("TODO") }

var _ = fmt.Sprintf
var _ = io.EOF
var _ = rand.N[int]
