package faultnet_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/qgate/qgate/internal/faultnet"
)

// TestBlackhole: a black-holed port neither accepts nor refuses (a dial
// times out), an open connection stalls, and Heal lets both through again.
func TestBlackhole(t *testing.T) {
	fw := faultnet.ForTest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	port, err := faultnet.Port(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	open, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	echo := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_, err := c.Read(make([]byte, 1))
		return err
	}
	if err := echo(open); err != nil {
		t.Fatalf("echo before the black hole: %v", err)
	}
	ctx := context.Background()
	if err := fw.Blackhole(ctx, port); err != nil {
		t.Fatal(err)
	}
	if err := echo(open); err == nil {
		t.Error("an open connection still answers through the black hole")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), 300*time.Millisecond); err == nil {
		c.Close()
		t.Error("a new connection completed through the black hole")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("dial through the black hole: %v, want a timeout (packets dropped, not refused)", err)
	}
	if err := fw.Heal(ctx, port); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	defer c.Close()
	if err := echo(c); err != nil {
		t.Errorf("echo after heal: %v", err)
	}
}
