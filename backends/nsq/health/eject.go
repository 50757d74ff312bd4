package health

import (
	"cmp"
	"errors"
	"fmt"
	"time"
)

// Defaults of EjectConfig, after Envoy's outlier detection scaled to a
// gateway in front of a few nsqd nodes: a node whose data path fails is
// out for 5s, then 10s, 15s… (at most 1m) while it keeps failing, so a
// node that answers /ping but not publishes flaps at most a few times a
// minute; a node that stays clean for 30s after its re-admission has one
// ejection forgiven.
const (
	DefaultConsecutive        = 2
	DefaultBaseEjection       = 5 * time.Second
	DefaultMaxEjection        = time.Minute
	DefaultEjectionDecay      = 30 * time.Second
	DefaultMaxEjectionPercent = 50
)

// EjectConfig configures the data-path signal: ejections by failed sends
// (passive checks), independent of the active /ping checks of Config.
// Zero values take the defaults.
type EjectConfig struct {
	// Consecutive is how many consecutive data-path failures (sends that
	// timed out or failed at the connection level) eject a node; one
	// success resets the count. A node on probation (re-admitted after an
	// ejection, until its ejection count has decayed to zero) is ejected
	// again by its first failure. Default 2.
	Consecutive int
	// BaseEjection is the ejection time of a node's first ejection; the
	// n-th consecutive ejection lasts n×BaseEjection. Good /ping answers do
	// not end an ejection early. Default 5s.
	BaseEjection time.Duration
	// MaxEjection caps one ejection. Default 1m.
	MaxEjection time.Duration
	// Decay: every Decay a re-admitted node spends without a data-path
	// failure takes one off its ejection count (the multiplier of
	// BaseEjection). Default 30s.
	Decay time.Duration
	// MaxEjectionPercent caps data-path ejections by the share of a pool's
	// nodes out already: no node is ejected once max(1, nodes×percent/100)
	// nodes are down (for either signal), and never the last usable node.
	// The pool enforces it; a node past the cap stays in, its failed sends
	// retried elsewhere. Default 50; 100 allows all but the last usable
	// node.
	MaxEjectionPercent int
}

// WithDefaults returns c with every zero field set to its default.
func (c EjectConfig) WithDefaults() EjectConfig {
	c.Consecutive = cmp.Or(c.Consecutive, DefaultConsecutive)
	c.BaseEjection = cmp.Or(c.BaseEjection, DefaultBaseEjection)
	c.MaxEjection = cmp.Or(c.MaxEjection, DefaultMaxEjection)
	c.Decay = cmp.Or(c.Decay, DefaultEjectionDecay)
	c.MaxEjectionPercent = cmp.Or(c.MaxEjectionPercent, DefaultMaxEjectionPercent)
	return c
}

// Validate reports every invalid field of c, after defaults.
func (c EjectConfig) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Consecutive < 0 {
		errs = append(errs, fmt.Errorf("health: eject consecutive %d: must be at least 1", c.Consecutive))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"base ejection", c.BaseEjection}, {"max ejection", c.MaxEjection}, {"ejection decay", c.Decay}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("health: %s %v: must be positive", f.name, f.d))
		}
	}
	if c.MaxEjection < c.BaseEjection {
		errs = append(errs, fmt.Errorf("health: max ejection %v: must be at least the base ejection %v", c.MaxEjection, c.BaseEjection))
	}
	if c.MaxEjectionPercent < 0 || c.MaxEjectionPercent > 100 {
		errs = append(errs, fmt.Errorf("health: max ejection percent %d: must be within 1..100", c.MaxEjectionPercent))
	}
	return errors.Join(errs...)
}

// MaxEjected returns how many of nodes may be ejected for data-path
// failures at once: max(1, nodes×MaxEjectionPercent/100). The caller
// also keeps the last usable node in.
func (c EjectConfig) MaxEjected(nodes int) int {
	c = c.WithDefaults()
	return max(1, nodes*c.MaxEjectionPercent/100)
}

// Ejector is the data-path signal of one node, without time or I/O: it
// counts consecutive failures, decides when they eject, and how long an
// ejection lasts (Envoy's outlier ejection: BaseEjection times the number
// of consecutive ejections, capped, decaying after clean periods). The
// zero Ejector uses the defaults of EjectConfig; it is not safe for
// concurrent use.
type Ejector struct {
	Config EjectConfig

	fails int       // consecutive data-path failures
	count int       // ejection multiplier, decays while clean
	until time.Time // end of the current (or last) ejection
	clean time.Time // since when count has been decaying
}

// Failure records one data-path failure at now and reports whether the node
// should be ejected: after Config.Consecutive consecutive failures, or the
// first one while on probation. It does not eject (the pool may refuse to,
// over MaxEjectionPercent); see Eject.
func (e *Ejector) Failure(now time.Time) bool {
	if e.Ejected(now) {
		return false // late answers of sends begun before the ejection
	}
	e.fails++
	need := e.Config.WithDefaults().Consecutive
	if e.Probation(now) {
		need = 1
	}
	return e.fails >= need
}

// Success records one data-path success: the consecutive count restarts.
func (e *Ejector) Success() { e.fails = 0 }

// Eject ejects the node at now and returns when the ejection ends: after
// count×BaseEjection, capped at MaxEjection, where count is one more than
// what is left of the previous ejections' count after decay. Ejecting an
// ejected node changes nothing.
func (e *Ejector) Eject(now time.Time) time.Time {
	if e.Ejected(now) {
		return e.until
	}
	c := e.Config.WithDefaults()
	e.count = e.decayed(now) + 1
	d := time.Duration(e.count) * c.BaseEjection
	if d > c.MaxEjection || d <= 0 {
		d = c.MaxEjection
	}
	e.until = now.Add(d)
	e.clean = e.until
	e.fails = 0
	return e.until
}

// decayed returns the ejection count left at now: one less for every
// Decay since the last ejection ended, as long as no ejection happened.
func (e *Ejector) decayed(now time.Time) int {
	if e.count == 0 || now.Before(e.clean) {
		return e.count
	}
	decay := e.Config.WithDefaults().Decay
	return max(0, e.count-int(now.Sub(e.clean)/decay))
}

// Confirmed ends the current ejection at now because the active checks
// failed too: both signals agree that the node is down, so it is out for
// its checks and comes back when they pass, as a dead node does. The count
// stays: the node is on probation when it comes back.
func (e *Ejector) Confirmed(now time.Time) {
	if e.Ejected(now) {
		e.until, e.clean = now, now
	}
}

// Ejected reports whether the node is ejected at now.
func (e *Ejector) Ejected(now time.Time) bool { return now.Before(e.until) }

// Until returns the end of the current or last ejection; zero if none.
func (e *Ejector) Until() time.Time { return e.until }

// Count returns the ejection count (the multiplier of the next ejection,
// before decay) at now.
func (e *Ejector) Count(now time.Time) int { return e.decayed(now) }

// Probation reports whether the node was re-admitted after an ejection
// whose count has not decayed to zero yet: its first failure ejects it.
func (e *Ejector) Probation(now time.Time) bool {
	return !e.Ejected(now) && e.decayed(now) > 0
}
