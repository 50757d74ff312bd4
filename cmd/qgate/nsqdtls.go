package main

import (
	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/internal/metrics"
	"github.com/qgate/qgate/internal/tlsutil"
)

// The metrics count the pool's yielded claims and expired messages
// (optional observer methods).
var (
	_ nsq.ClaimObserver  = (*metrics.Metrics)(nil)
	_ nsq.ExpiryObserver = (*metrics.Metrics)(nil)
	_ nsq.FilterObserver = (*metrics.Metrics)(nil)
)

// nsqdSecurity sets the pool's TLS and AUTH secret for its connections to
// nsqd, and its observer (per-node send metrics).
func (g *gateway) nsqdSecurity(cfg *nsq.Config) error {
	cfg.Observer = g.metrics
	cfg.AuthSecret = g.nsqd.AuthSecret
	if !g.nsqd.TLS {
		if g.nsqd.AuthSecret != "" {
			g.log.Warn("the nsqd AUTH secret goes over plaintext; turn on --nsqd-tls")
		}
		return nil
	}
	c, err := tlsutil.Client(tlsutil.ClientFiles{CAFile: g.nsqd.TLSCAFile,
		CertFile: g.nsqd.TLSCertFile, KeyFile: g.nsqd.TLSKeyFile})
	if err != nil {
		return err
	}
	cfg.TLS = c
	return nil
}
