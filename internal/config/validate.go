package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/discovery"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/service"
)

// checker turns a rawFile into a File, collecting errors with the lines the
// decoder recorded.
type checker struct {
	*decoder
	rootLine int
	names    map[string]string // member name -> path of its first use
	tcps     map[string]string // member tcp -> path of its first use
}

// lineOf returns the line of path, or of its nearest ancestor present in
// the file (for a missing field: the mapping that lacks it).
func (c *checker) lineOf(path string) int {
	for p := path; p != ""; {
		if l, ok := c.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return c.rootLine
}

func (c *checker) fail(path, format string, args ...any) {
	c.errorf(c.lineOf(path), path, format, args...)
}

// present reports whether the file gives path a valid value.
func (c *checker) present(path string) bool {
	_, ok := c.lines[path]
	return ok && !c.bad[path]
}

func (c *checker) file(r *rawFile) *File {
	f := &File{Listen: r.Listen, Mode: nsq.Mode(r.Mode)}
	c.names = map[string]string{}
	c.tcps = map[string]string{}

	if r.Listen != "" {
		if _, _, err := net.SplitHostPort(r.Listen); err != nil {
			c.fail("listen", "%s (want host:port or :port)", addrErrMsg(err))
		}
	}
	switch f.Mode {
	case nsq.ModeCluster, nsq.ModeFailover, nsq.ModeHA:
	case "":
		c.fail("mode", "missing (cluster, failover or ha)")
	default:
		c.fail("mode", "unknown mode %q (want cluster, failover or ha)", r.Mode)
	}

	for i, m := range r.Nodes {
		f.Nodes = append(f.Nodes, c.member(m, fmt.Sprintf("nodes[%d]", i)))
	}
	for i, g := range r.Groups {
		path := fmt.Sprintf("groups[%d]", i)
		grp := Group{Name: g.Name}
		if grp.Name == "" {
			grp.Name = fmt.Sprintf("group-%d", i+1)
		}
		if len(g.Members) == 0 {
			c.fail(path+".members", "missing: a group needs at least one member")
		}
		for j, m := range g.Members {
			grp.Members = append(grp.Members, c.member(m, fmt.Sprintf("%s.members[%d]", path, j)))
		}
		f.Groups = append(f.Groups, grp)
	}
	for i := range f.Groups {
		for j := range i {
			if f.Groups[i].Name == f.Groups[j].Name {
				c.fail(fmt.Sprintf("groups[%d].name", i), "group name %q is also used by groups[%d]", f.Groups[i].Name, j)
			}
		}
	}
	c.layout(r, f)

	f.Check = c.check(r.Check)
	f.FailbackHold = c.duration("failback_hold", r.FailbackHold)
	f.DialTimeout = c.duration("dial_timeout", r.DialTimeout)
	f.WriteTimeout = c.duration("write_timeout", r.WriteTimeout)
	f.AttemptTimeout = c.duration("attempt_timeout", r.AttemptTimeout)
	f.AttemptTimeoutMin = c.duration("attempt_timeout_min", r.AttemptMin)
	if f.AttemptTimeoutMin > 0 && f.AttemptTimeoutMin > cmp.Or(f.AttemptTimeout, nsq.DefaultAttemptTimeout) {
		c.fail("attempt_timeout_min", "%v is above the attempt timeout", f.AttemptTimeoutMin)
	}
	f.Eject = c.eject(r.Eject)
	c.replication(r, f)

	f.Lookupd.PollInterval = c.duration("lookupd.poll_interval", r.Lookupd.PollInterval)
	for i, a := range r.Lookupd.Addrs {
		if _, err := discovery.New([]string{a}, 0, nil, nil); err != nil {
			c.fail(fmt.Sprintf("lookupd.addrs[%d]", i), "%s", strings.TrimPrefix(err.Error(), "discovery: "))
		}
	}
	f.Lookupd.Addrs = r.Lookupd.Addrs
	if len(f.Lookupd.Addrs) > 0 && f.Mode != nsq.ModeCluster && f.Mode != "" {
		c.fail("lookupd", "discovery needs mode cluster, not %s", f.Mode)
	}

	f.Limits = Limits{
		MaxBodyBytes:     c.positive("limits.max_body_bytes", r.Limits.MaxBodyBytes),
		MaxBatchMessages: int(c.positive("limits.max_batch_messages", int64(r.Limits.MaxBatchMessages))),
		MaxBatchBytes:    c.positive("limits.max_batch_bytes", r.Limits.MaxBatchBytes),
	}
	c.ops(r, f)
	return f
}

// layout checks that nodes, groups or embedded nodes fit the mode.
func (c *checker) layout(r *rawFile, f *File) {
	hasNodes, hasGroups := len(r.Nodes) > 0, len(r.Groups) > 0
	if c.present("embedded") {
		f.Embedded = r.Embedded
		switch {
		case r.Embedded < 1 || r.Embedded > MaxEmbedded:
			c.fail("embedded", "must be 1 to %d (in-process nsqd nodes, for trying qgate)", MaxEmbedded)
		case hasNodes || hasGroups || len(r.Lookupd.Addrs) > 0:
			c.fail("embedded", "give embedded or nodes, groups and lookupd, not both")
		case f.Mode == nsq.ModeHA:
			c.fail("embedded", "embedded nodes run in mode cluster or failover, not ha")
		}
		return
	}
	switch {
	case hasNodes && hasGroups:
		c.fail("groups", "give nodes or groups, not both")
	case !hasNodes && !hasGroups && len(r.Lookupd.Addrs) > 0 && f.Mode == nsq.ModeCluster:
		// Discovery alone.
	case !hasNodes && !hasGroups:
		c.fail("nodes", "missing: list the nsqd nodes (nodes, or groups for mode ha), or run them in process with embedded: 3")
	case f.Mode == nsq.ModeHA && hasNodes:
		c.fail("nodes", "mode ha needs groups (each a primary and its backups), not nodes")
	case f.Mode == nsq.ModeFailover && len(r.Groups) > 1:
		c.fail("groups", "mode failover has one group (%d given); use mode ha for several", len(r.Groups))
	case f.Mode == nsq.ModeCluster && hasGroups:
		for i, g := range r.Groups {
			if len(g.Members) > 1 {
				c.fail(fmt.Sprintf("groups[%d].members", i), "mode cluster has one member per group (%d given); use mode ha for backups", len(g.Members))
			}
		}
	}
}

// member checks one member at path and fills in its defaults.
func (c *checker) member(m rawMember, path string) Member {
	out := Member{Name: m.Name, TCPAddr: m.TCP, HTTPAddr: m.HTTP}
	tcpOK := false
	if m.TCP == "" {
		c.fail(path+".tcp", "missing: the nsqd TCP address, host:port")
	} else if err := checkHostPort(m.TCP); err != nil {
		c.fail(path+".tcp", "%v", err)
	} else {
		tcpOK = true
		if prev, dup := c.tcps[m.TCP]; dup {
			c.fail(path+".tcp", "address %s is also used by %s", m.TCP, prev)
		}
		c.tcps[m.TCP] = path
	}
	if m.HTTP != "" {
		if err := checkHostPort(m.HTTP); err != nil {
			c.fail(path+".http", "%v", err)
		}
	} else if tcpOK {
		host, port, _ := net.SplitHostPort(m.TCP)
		p, _ := strconv.Atoi(port)
		if p >= 65535 {
			c.fail(path+".http", "missing, and tcp port + 1 is not a port")
		}
		out.HTTPAddr = net.JoinHostPort(host, strconv.Itoa(p+1))
	}
	if out.Name == "" {
		out.Name = m.TCP
	}
	if out.Name != "" {
		if prev, dup := c.names[out.Name]; dup {
			field := path + ".name"
			if m.Name == "" {
				field = path + ".tcp"
			}
			c.fail(field, "node name %q is also used by %s", out.Name, prev)
		} else {
			c.names[out.Name] = path
		}
	}
	return out
}

// checkHostPort checks host:port with a non-empty host and a port 1-65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New(addrErrMsg(err))
	}
	if host == "" {
		return fmt.Errorf("missing host in address %q", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("invalid port %q in address %q", port, s)
	}
	return nil
}

// addrErrMsg is net's message without the address repeated twice.
func addrErrMsg(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return fmt.Sprintf("%s: %q", ae.Err, ae.Addr)
	}
	return err.Error()
}

// check converts the check section. In the file, jitter 0 means none (in
// health.Config, 0 takes the default and a negative value means none).
func (c *checker) check(r rawCheck) health.Config {
	h := health.Config{
		Interval: c.duration("check.interval", r.Interval),
		Timeout:  c.duration("check.timeout", r.Timeout),
		Jitter:   r.Jitter,
		Fall:     int(c.positive("check.fall", int64(r.Fall))),
		Rise:     int(c.positive("check.rise", int64(r.Rise))),
	}
	if c.present("check.jitter") {
		if r.Jitter < 0 || r.Jitter > 1 {
			c.fail("check.jitter", "%v is out of range (want 0 to 1, a fraction of the interval)", r.Jitter)
		}
		if r.Jitter == 0 {
			h.Jitter = -1
		}
	}
	return h
}

// eject converts the eject section.
func (c *checker) eject(r rawEject) health.EjectConfig {
	e := health.EjectConfig{
		Consecutive:        int(c.positive("eject.consecutive", int64(r.Consecutive))),
		BaseEjection:       c.duration("eject.base", r.Base),
		MaxEjection:        c.duration("eject.max", r.Max),
		Decay:              c.duration("eject.decay", r.Decay),
		MaxEjectionPercent: int(c.positive("eject.max_percent", int64(r.MaxPercent))),
	}
	if e.MaxEjectionPercent > 100 {
		c.fail("eject.max_percent", "%d is out of range (want 1 to 100)", e.MaxEjectionPercent)
	}
	if d := e.WithDefaults(); d.MaxEjection < d.BaseEjection {
		c.fail("eject.max", "%v is below the base ejection %v", d.MaxEjection, d.BaseEjection)
	}
	return e
}

// duration checks that a duration given in the file is positive.
func (c *checker) duration(path string, d duration) time.Duration {
	if c.present(path) && d <= 0 {
		c.fail(path, "must be positive (leave it out for the default)")
	}
	return time.Duration(d)
}

// positive checks that a number given in the file is at least 1.
func (c *checker) positive(path string, n int64) int64 {
	if c.present(path) && n < 1 {
		c.fail(path, "must be at least 1 (leave it out for the default)")
	}
	return n
}

// replication checks the keys of replicated sends: replicas, min_replicas,
// standby_delay, ack_topic, timer_topic and timer_hop.
func (c *checker) replication(r *rawFile, f *File) {
	if c.present("replicas") {
		f.Replicas = r.Replicas
		if r.Replicas < 1 || r.Replicas > service.MaxReplicas {
			c.fail("replicas", "must be 1 to %d (copies of a Send, each on a different node)", service.MaxReplicas)
		}
	}
	if c.present("min_replicas") {
		f.MinReplicas = r.MinReplicas
		switch {
		case r.MinReplicas < 0 || r.MinReplicas > service.MaxReplicas:
			c.fail("min_replicas", "must be 0 to %d (0: every copy asked for)", service.MaxReplicas)
		case f.Replicas > 0 && r.MinReplicas > f.Replicas:
			c.fail("min_replicas", "%d is above replicas (%d)", r.MinReplicas, f.Replicas)
		}
	}
	f.StandbyDelay = c.duration("standby_delay", r.StandbyDelay)
	if c.present("ack_topic") {
		f.AckTopic = r.AckTopic
		if r.AckTopic != AckTopicOff && !gonsq.IsValidTopicName(r.AckTopic) {
			c.fail("ack_topic", "%q is not a valid NSQ topic name (or %q: acks not shared)", r.AckTopic, AckTopicOff)
		}
	}
	if c.present("timer_topic") {
		f.TimerTopic = r.TimerTopic
		if r.TimerTopic != TimerTopicOff && !gonsq.IsValidTopicName(r.TimerTopic) {
			c.fail("timer_topic", "%q is not a valid NSQ topic name (or %q: delays up to timer_hop only)", r.TimerTopic, TimerTopicOff)
		}
	}
	f.TimerHop = c.duration("timer_hop", r.TimerHop)
	if f.TimerHop != 0 && (f.TimerHop < 10*time.Millisecond || f.TimerHop > nsq.DefaultTimerHop) {
		c.fail("timer_hop", "must be 10ms to %v (nsqd's --max-req-timeout, which it must not exceed)", nsq.DefaultTimerHop)
	}
}
