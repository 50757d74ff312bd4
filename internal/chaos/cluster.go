package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/internal/nsqd"
)

// cluster is the nsqd processes of a run, named n1, n2, … as the pool
// knows them.
type cluster struct {
	procs []*nsqd.Process
	names []string
}

// startCluster starts n nsqd processes with data directories under dir.
func startCluster(ctx context.Context, bin, dir string, n int, args []string, out io.Writer) (*cluster, error) {
	c := &cluster{}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		data := filepath.Join(dir, name)
		if err := os.MkdirAll(data, 0o755); err != nil {
			c.close()
			return nil, fmt.Errorf("chaos: %w", err)
		}
		p, err := nsqd.StartProcess(ctx, nsqd.ProcessOptions{Binary: bin, DataDir: data, Args: args, Output: out})
		if err != nil {
			c.close()
			return nil, fmt.Errorf("chaos: node %s: %w", name, err)
		}
		c.procs = append(c.procs, p)
		c.names = append(c.names, name)
	}
	return c, nil
}

// node returns the process of the named node.
func (c *cluster) node(name string) *nsqd.Process {
	for i, n := range c.names {
		if n == name {
			return c.procs[i]
		}
	}
	panic("chaos: no node " + name) // a scenario names its own nodes
}

// nodeConfigs returns the pool's view of the nodes.
func (c *cluster) nodeConfigs() []nsq.NodeConfig {
	ncs := make([]nsq.NodeConfig, len(c.procs))
	for i, p := range c.procs {
		ncs[i] = nsq.NodeConfig{Name: c.names[i], TCPAddr: p.TCPAddr(), HTTPAddr: p.HTTPAddr()}
	}
	return ncs
}

// groups lays the nodes out for a mode; layout (node indices per group)
// is used for ModeHA.
func (c *cluster) groups(mode nsq.Mode, layout [][]int) ([]nsq.GroupConfig, error) {
	ncs := c.nodeConfigs()
	if mode != nsq.ModeHA {
		return nsq.GroupsForMode(mode, ncs)
	}
	var gs []nsq.GroupConfig
	for i, idx := range layout {
		g := nsq.GroupConfig{Name: fmt.Sprintf("g%d", i+1)}
		for _, j := range idx {
			g.Nodes = append(g.Nodes, ncs[j])
		}
		gs = append(gs, g)
	}
	return gs, nil
}

// close kills every process.
func (c *cluster) close() error {
	var errs []error
	for _, p := range c.procs {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}
