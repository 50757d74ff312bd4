// Package health decides whether an nsqd node is up from two independent
// signals: active HTTP checks of nsqd's /ping with interval, timeout, jitter
// and fall/rise thresholds (HAProxy semantics), and the data path, the
// results of real sends (Envoy's outlier detection).
//
// # Two signals, one decision
//
// A node starts Unknown. The first check result sets Up or Down directly,
// so a pool knows its nodes after one round. Later, an Up node goes Down
// after Fall consecutive failed checks, and a Down node comes Up after Rise
// consecutive passed checks. Machine is that logic without time or I/O.
//
// The data path has its own thresholds (EjectConfig): EjectConfig.Consecutive
// failed sends in a row eject the node for BaseEjection times its ejection
// count (capped at MaxEjection). Passed checks do not end an ejection: a
// node whose /ping answers while its publishes time out stays out for the
// whole ejection, and each further ejection lasts longer, so it cannot flap
// in and out with every pair of good pings. When the ejection ends the node
// is re-admitted on probation (its first failed send ejects it again);
// every Decay without failure takes one off its count. Ejector is that
// logic without time or I/O. The node is Down while either signal says so;
// Snapshot.Reason tells which. When the checks fail too, the two signals
// agree the node is down (it died, or is cut off entirely): the ejection
// ends there, and the node comes back as a dead node does, with Rise passed
// checks, on probation.
//
// # Checks
//
// A check is GET http://<http addr>/ping bounded by Config.Timeout; it
// passes iff nsqd answers 200 with body "OK" (nsqd answers 500 when it is
// itself unhealthy, for example when its disk queue fails). Check latency
// is the /ping round trip alone. Depth and in-flight counts come from
// nsqd's /stats?format=json, fetched every few checks (see WithStatsEvery)
// or on demand (Monitor.Stats), never as part of a check.
//
// # Timing
//
// Checks start every Interval (± jitter) counted from the start of the
// previous check, and never overlap. With Timeout ≤ Interval, a node that
// dies or freezes is Down within Fall×Interval + Timeout (2.5s with the
// defaults; a refused connection fails at once, a frozen node through the
// timeout), and a recovered node is Up within about Rise×Interval. A
// data-path Eject is immediate. With Timeout > Interval, failed checks are
// Timeout apart, so detection takes up to Interval + Fall×Timeout.
package health

import (
	"cmp"
	"errors"
	"fmt"
	"time"
)

// Defaults of Config, chosen for nsqd on a LAN: a dead node is noticed
// within Fall×Interval+Timeout ≈ 2.5s, and one lost packet or one slow
// answer does not flap a node.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = 500 * time.Millisecond
	DefaultJitter   = 0.1
	DefaultFall     = 2
	DefaultRise     = 2
)

// Config configures active checks. Zero values take the defaults.
type Config struct {
	// Interval between checks of one node. Default 1s.
	Interval time.Duration
	// Timeout of one check. Default 500ms.
	Timeout time.Duration
	// Jitter spreads checks: each interval is Interval ± Jitter×Interval,
	// chosen uniformly. Default 0.1; a negative Jitter means none. At most 1.
	Jitter float64
	// Fall: consecutive failed checks that take an up node down. Default 2.
	Fall int
	// Rise: consecutive passed checks that bring a down node up. Default 2.
	Rise int
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.Jitter = cmp.Or(c.Jitter, DefaultJitter)
	c.Fall = cmp.Or(c.Fall, DefaultFall)
	c.Rise = cmp.Or(c.Rise, DefaultRise)
	return c
}

// Validate reports the first invalid field of c, after defaults: negative
// durations or thresholds, or a Jitter above 1.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("health: interval %v: must be positive", c.Interval))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("health: timeout %v: must be positive", c.Timeout))
	}
	if c.Jitter > 1 {
		errs = append(errs, fmt.Errorf("health: jitter %v: must be at most 1", c.Jitter))
	}
	if c.Fall < 0 {
		errs = append(errs, fmt.Errorf("health: fall %d: must be at least 1", c.Fall))
	}
	if c.Rise < 0 {
		errs = append(errs, fmt.Errorf("health: rise %d: must be at least 1", c.Rise))
	}
	return errors.Join(errs...)
}
