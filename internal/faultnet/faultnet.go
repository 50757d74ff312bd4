// Package faultnet black-holes TCP ports on loopback with nftables, for
// tests of gray failures: packets to and from a port are silently dropped,
// as a broken switch or a lost route would, so connections neither fail nor
// answer (unlike a killed process, whose port refuses at once, or a frozen
// one, whose kernel still completes handshakes).
//
// It needs root (CAP_NET_ADMIN) and the nft command. Each Firewall owns one
// nftables table named qgate_fault_<pid>_<n> with a set of black-holed
// ports; Close deletes the table, and Open deletes the tables of earlier
// processes that died without closing theirs, so a rule never outlives the
// run that set it for long. ForTest skips the test, loudly, where nftables
// cannot be used.
package faultnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tablePrefix names every table of this package.
const tablePrefix = "qgate_fault_"

var seq atomic.Int64

// Firewall black-holes ports on loopback until Close. Safe for concurrent
// use.
type Firewall struct {
	table string
	mu    sync.Mutex
	holes map[int]bool
	done  bool
}

// Open creates a Firewall: its table, a set of ports and two rules that
// drop every TCP packet whose destination or source port is in the set, on
// the output hook (loopback traffic passes it in both directions).
func Open(ctx context.Context) (*Firewall, error) {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("faultnet: nft not found (apt-get install nftables): %w", err)
	}
	reapStale(ctx)
	f := &Firewall{table: fmt.Sprintf("%s%d_%d", tablePrefix, os.Getpid(), seq.Add(1)), holes: make(map[int]bool)}
	script := fmt.Sprintf(`add table inet %[1]s
add set inet %[1]s ports { type inet_service; }
add chain inet %[1]s out { type filter hook output priority -10; policy accept; }
add rule inet %[1]s out ip daddr 127.0.0.0/8 tcp dport @ports drop
add rule inet %[1]s out ip saddr 127.0.0.0/8 tcp sport @ports drop
`, f.table)
	if err := nft(ctx, script); err != nil {
		_ = nft(context.Background(), "delete table inet "+f.table+"\n")
		return nil, err
	}
	return f, nil
}

// Blackhole drops every packet to and from port on loopback from now on:
// open connections stall, new ones never complete.
func (f *Firewall) Blackhole(ctx context.Context, port int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return errors.New("faultnet: firewall closed")
	}
	if f.holes[port] {
		return nil
	}
	if err := nft(ctx, fmt.Sprintf("add element inet %s ports { %d }\n", f.table, port)); err != nil {
		return err
	}
	f.holes[port] = true
	return nil
}

// Heal lets port's packets through again.
func (f *Firewall) Heal(ctx context.Context, port int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done || !f.holes[port] {
		return nil
	}
	if err := nft(ctx, fmt.Sprintf("delete element inet %s ports { %d }\n", f.table, port)); err != nil {
		return err
	}
	delete(f.holes, port)
	return nil
}

// Close heals every port and deletes the table. Safe twice.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return nil
	}
	f.done = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return nft(ctx, "delete table inet "+f.table+"\n")
}

// ForTest opens a Firewall closed at the test's cleanup (which runs on
// every exit path of the test, failures and panics included). Where
// nftables cannot be used (not root, no nft, no kernel support) it skips
// the test with a message that says so and how to run it.
func ForTest(t testing.TB) *Firewall {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED (faultnet): black-holing loopback ports needs root and nftables; run as root with nft installed (apt-get install nftables) to run this fault scenario")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := Open(ctx)
	if err != nil {
		t.Skipf("SKIPPED (faultnet): nftables unusable here, fault scenario not run: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("faultnet: removing the rules: %v (remove table inet %s by hand)", err, f.table)
		}
	})
	return f
}

// Port returns the port of a host:port address, for Blackhole.
func Port(addr string) (int, error) {
	i := bytes.LastIndexByte([]byte(addr), ':')
	if i < 0 {
		return 0, fmt.Errorf("faultnet: address %q has no port", addr)
	}
	return strconv.Atoi(addr[i+1:])
}

// nft runs an nft script read from stdin.
func nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = bytes.NewBufferString(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("faultnet: nft: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

var staleTable = regexp.MustCompile(`table inet (` + tablePrefix + `(\d+)_\d+)`)

// reapStale deletes the tables of processes that no longer run (a test
// binary killed before its cleanup).
func reapStale(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "nft", "list", "tables").Output()
	if err != nil {
		return
	}
	for _, m := range staleTable.FindAllStringSubmatch(string(out), -1) {
		pid, err := strconv.Atoi(m[2])
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		_ = nft(ctx, "delete table inet "+m[1]+"\n")
	}
}

// alive reports whether a process with pid exists.
func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}
