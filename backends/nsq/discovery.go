package nsq

import (
	"fmt"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/discovery"
)

// startDiscovery runs the nsqlookupd poller: nodes it lists join the pool,
// each as a group of its own (cluster mode), and discovered nodes it stops
// listing leave. Nodes from the static configuration never leave.
func (p *Pool) startDiscovery() error {
	poller, err := discovery.New(p.cfg.LookupdHTTPAddrs, p.cfg.LookupdPollInterval, nil, p.log)
	if err != nil {
		return fmt.Errorf("nsq: discovery: %w", err)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = poller.Run(p.ctx, p.syncDiscovered)
	}()
	return nil
}

// syncDiscovered makes the discovered part of the pool match nodes.
func (p *Pool) syncDiscovered(nodes []discovery.Node) {
	want := make(map[string]discovery.Node, len(nodes))
	for _, n := range nodes {
		want[n.TCPAddr] = n
	}
	p.mu.RLock()
	var add []discovery.Node
	var remove []*node
	have := make(map[string]bool)
	for _, n := range p.nodes {
		have[n.cfg.TCPAddr] = true
		if n.discovered {
			if _, ok := want[n.cfg.TCPAddr]; !ok {
				remove = append(remove, n)
			}
		}
	}
	for _, n := range nodes {
		if !have[n.TCPAddr] {
			add = append(add, n)
		}
	}
	p.mu.RUnlock()
	for _, d := range add {
		p.addNode(NodeConfig{Name: d.TCPAddr, TCPAddr: d.TCPAddr, HTTPAddr: d.HTTPAddr})
	}
	for _, n := range remove {
		p.removeNode(n)
	}
}

// addNode adds a discovered node as a group of its own, probes it once and
// starts it; subscriptions connect to it.
func (p *Pool) addNode(nc NodeConfig) {
	g := &group{name: nc.Name}
	n, err := p.newNode(nc, g, 0)
	if err != nil {
		p.log.Warn("nsq discovered node not added", "node", nc.Name, "err", err)
		return
	}
	n.discovered = true
	g.members = []*node{n}
	p.probeAll([]*node{n})
	p.mu.Lock()
	if _, dup := p.nodes[nc.Name]; dup || p.closed {
		p.mu.Unlock()
		n.producer.Stop()
		n.mon.Stop()
		return
	}
	p.nodes[nc.Name] = n
	p.groups = append(p.groups, g)
	p.startNodeLocked(n)
	p.refreshLocked(time.Now())
	ev := backends.NodeEvent{Node: p.statusLocked(n), Previous: backends.NodeUnknown}
	for w := range p.watchers {
		w.push(ev)
	}
	subs := p.subsLocked()
	p.mu.Unlock()
	p.log.Info("nsq node joined", "node", nc.Name, "http", nc.HTTPAddr)
	for _, s := range subs {
		s.kickConnect()
	}
}

// removeNode takes a node out of the pool: no more sends; subscriptions
// disconnect from it after handing its deliveries back.
func (p *Pool) removeNode(n *node) {
	p.mu.Lock()
	if n.removed {
		p.mu.Unlock()
		return
	}
	n.removed = true
	delete(p.nodes, n.cfg.Name)
	for i, g := range p.groups {
		if g == n.group {
			p.groups = append(p.groups[:i:i], p.groups[i+1:]...)
			break
		}
	}
	ev := backends.NodeEvent{Node: p.statusLocked(n), Previous: n.reported}
	ev.Node.State, ev.Node.Active, ev.Node.LastError = backends.NodeDown, false, "left the pool"
	for w := range p.watchers {
		w.push(ev)
	}
	subs := p.subsLocked()
	p.mu.Unlock()
	p.log.Info("nsq node left", "node", n.cfg.Name)
	for _, s := range subs {
		s.nodeDown(n.cfg.TCPAddr)
		s.disconnect(n.cfg.TCPAddr)
	}
	p.stopNode(n)
}
