package nsq

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// recorder is an Observer that counts what it is told.
type recorder struct {
	mu       sync.Mutex
	ok, errs int
	retries  int
	dead     map[string]int
}

func (r *recorder) SendAttempt(node, topic string, msgs int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs++
	} else {
		r.ok++
	}
}

func (r *recorder) SendRetry(string) { r.mu.Lock(); r.retries++; r.mu.Unlock() }

func (r *recorder) DeadLettered(topic, channel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead == nil {
		r.dead = map[string]int{}
	}
	r.dead[topic+"/"+channel]++
}

func (r *recorder) get() (ok, errs, retries int, dead map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.errs, r.retries, dead
}

// TestObserver: every write, every retry on another node and every dead
// letter reaches Config.Observer.
func TestObserver(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 3)
	rec := &recorder{}
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) {
		c.Observer = rec
		// Slow checks: the send path, not the checker, meets the stopped node.
		c.Check = health.Config{Interval: 5 * time.Second, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2}
	})
	nodes[1].Stop()
	for i := range 6 {
		send(t, p, "obs", string(rune('a'+i)))
	}
	ok, errs, retries, _ := rec.get()
	t.Logf("6 sends with one node stopped: %d acknowledged writes, %d failed, %d retries", ok, errs, retries)
	if ok != 6 || errs < 1 || retries != errs {
		t.Errorf("observer saw %d ok, %d errors, %d retries; want 6 ok and a retry per error (at least one)", ok, errs, retries)
	}

	sub, err := p.Subscribe(context.Background(), backends.SubscribeOptions{Topic: "obsdl", Channel: "c",
		MaxInFlight: 1, AckDeadline: 5 * time.Second, MaxAttempts: 1, DeadLetterTopic: "obsdl-dead"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	send(t, p, "obsdl", "x")
	if err := receive(t, sub, 5*time.Second).Acker.Nack(0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := func() int { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.dead["obsdl/c"] }()
		if r == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters observed: %d, want 1", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTLSAuth: against an nsqd that requires TLS on TCP (tcp-https: its
// HTTP port stays plain for health checks) and authenticates through
// an auth server, a pool with Config.TLS and Config.AuthSecret sends and
// subscribes, and the auth server saw the secret over TLS.
func TestTLSAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	var mu sync.Mutex
	var secrets []string
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		secrets = append(secrets, q.Get("secret")+" tls="+q.Get("tls"))
		mu.Unlock()
		if q.Get("secret") != "s3cret" {
			http.Error(w, "bad secret", http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"ttl": 3600, "identity": "qgate",
			"authorizations": []map[string]any{{"topic": ".*", "channels": []string{".*"}, "permissions": []string{"subscribe", "publish"}}}})
	}))
	t.Cleanup(auth.Close)
	proc := nsqdtest.StartProcess(t, nsqdtest.Args("--tls-cert="+certFile, "--tls-key="+keyFile,
		"--tls-required=tcp-https", "--auth-http-address="+auth.Listener.Addr().String()))
	p := newPool(t, ModeCluster, processNodes([]*nsqdtest.Process{proc}), func(c *Config) {
		c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c.AuthSecret = "s3cret"
	})
	sub := subscribe(t, p, "secure", "c", 10)
	send(t, p, "secure", "hello")
	d := receive(t, sub, 5*time.Second)
	if string(d.Body) != "hello" {
		t.Errorf("got %q", d.Body)
	}
	d.Acker.Ack()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("auth requests: %v", secrets)
	if len(secrets) < 2 {
		t.Errorf("auth server saw %d requests, want one per connection (producer and consumer)", len(secrets))
	}
	for _, s := range secrets {
		if s != "s3cret tls=true" {
			t.Errorf("auth request %q, want the secret over TLS", s)
		}
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key to
// dir, and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nsqd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
