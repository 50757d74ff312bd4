package nsqd

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	nsqio "github.com/nsqio/nsq/nsqd"
)

// slogAdapter is nsqd's Logger (Output(calldepth, line)) over a
// *slog.Logger. nsqd formats every line as "LEVEL: message"; the level is
// parsed back out and mapped to a slog level.
type slogAdapter struct {
	logger atomic.Pointer[slog.Logger] // nil discards
	// listening is closed when nsqd's TCP and HTTP servers log that they
	// listen: the sign that Main has started its goroutines (see Start).
	listening chan struct{}
	seen      atomic.Int32 // "listening on" lines so far
	// stopping is set by Node.Stop: nsqd's Exit closes client connections
	// under their read loops, which then log an ERROR "use of closed network
	// connection" for every client. Those are the shutdown itself, not a
	// fault, and go to Debug.
	stopping atomic.Bool
}

func newSlogAdapter() *slogAdapter {
	return &slogAdapter{listening: make(chan struct{})}
}

// set installs logger tagged with the node's name. nsqd logs from New on,
// before the name (which may contain the port) is known; until then lines go
// to logger untagged.
func (a *slogAdapter) set(logger *slog.Logger, name string) {
	if logger != nil && name != "" {
		logger = logger.With("node", name)
	}
	a.logger.Store(logger)
}

// nsqd's level prefixes, as its internal lg package writes them, and the slog
// levels they map to. nsqd INFO lines report every client connection, topic
// and channel: routine for a gateway that owns the connections, so Debug.
var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"DEBUG: ", slog.LevelDebug - 4},
	{"INFO: ", slog.LevelDebug},
	{"WARNING: ", slog.LevelWarn},
	{"ERROR: ", slog.LevelError},
	{"FATAL: ", slog.LevelError},
}

// Output implements nsqio.Logger.
func (a *slogAdapter) Output(_ int, s string) error {
	if strings.HasPrefix(s, "INFO: TCP: listening on ") || strings.HasPrefix(s, "INFO: HTTP: listening on ") {
		if a.seen.Add(1) == 2 {
			close(a.listening)
		}
	}
	logger := a.logger.Load()
	if logger == nil {
		return nil
	}
	level := slog.LevelInfo
	for _, p := range levelPrefixes {
		if rest, ok := strings.CutPrefix(s, p.prefix); ok {
			s, level = rest, p.level
			break
		}
	}
	if level == slog.LevelError && a.stopping.Load() && strings.Contains(s, "use of closed network connection") {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if logger.Enabled(ctx, level) {
		logger.Log(ctx, level, strings.TrimRight(s, "\n"), "component", "nsqd")
	}
	return nil
}

// setLevel sets nsqd's log level to the lowest level whose lines logger
// keeps, so nsqd does not format lines only to have them dropped; but INFO
// at least, for the "listening on" lines Start waits for.
func setLevel(o *nsqio.Options, logger *slog.Logger) {
	o.LogLevel = nsqio.LOG_INFO
	if logger != nil && logger.Enabled(context.Background(), slog.LevelDebug-4) {
		o.LogLevel = nsqio.LOG_DEBUG
	}
}
