package health

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqio/nsq/nsqd"
)

// tbLogger sends nsqd's logs to t.Log.
type tbLogger struct{ t testing.TB }

func (l tbLogger) Output(_ int, s string) error { l.t.Log(s); return nil }

// startNSQD starts an in-process nsqd on loopback ephemeral ports and
// returns it; it exits at cleanup.
func startNSQD(t testing.TB) *nsqd.NSQD {
	t.Helper()
	opts := nsqd.NewOptions()
	opts.TCPAddress = "127.0.0.1:0"
	opts.HTTPAddress = "127.0.0.1:0"
	opts.HTTPSAddress = ""
	opts.DataPath = t.TempDir()
	opts.Logger = tbLogger{t}
	opts.LogLevel = nsqd.LOG_WARN
	n, err := nsqd.New(opts)
	if err != nil {
		t.Fatalf("nsqd: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Main(); err != nil {
			t.Errorf("nsqd main: %v", err)
		}
	}()
	t.Cleanup(func() { n.Exit(); <-done })
	// Exit must not run while Main is still starting its goroutines (nsqd
	// races there): wait until nsqd answers, and a little longer.
	url := "http://" + n.RealHTTPAddr().String() + "/ping"
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nsqd does not answer: %v", err)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(20 * time.Millisecond)
	return n
}

// freezer is a TCP proxy in front of a real server that can stop
// forwarding bytes, as a SIGSTOPped process does: connections are still
// accepted by the kernel, but nothing answers. It injects a fault that the
// real nsqd cannot produce on demand in-process.
type freezer struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startFreezer(t testing.TB, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) Addr() string { return f.ln.Addr().String() }

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, u)
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(u, c)
		go f.pipe(c, u)
	}
}

// pipe copies src to dst, holding every chunk while frozen.
func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for f.frozen.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) close() {
	f.frozen.Store(false)
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
