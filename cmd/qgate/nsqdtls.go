package main

import (
	"errors"

	"github.com/qgate/qgate/backends/nsq"
)

// nsqdSecurity sets the pool's TLS and AUTH secret for nsqd.
func (g *gateway) nsqdSecurity(cfg *nsq.Config) error {
	if g.nsqd.TLS || g.nsqd.AuthSecret != "" {
		return errors.New("TLS and AUTH to nsqd need the pool's TLS support, which has not landed yet")
	}
	return nil
}
