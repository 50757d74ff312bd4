package tlsutil_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"
	nsqio "github.com/nsqio/nsq/nsqd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qgate/qgate/internal/metrics"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
	"github.com/qgate/qgate/internal/tlsutil"
	"github.com/qgate/qgate/internal/tlsutil/tlstest"
)

// serveHealth runs a gRPC server with only the health service on a
// loopback port with creds.
func serveHealth(t *testing.T, creds credentials.TransportCredentials) string {
	t.Helper()
	srv := grpc.NewServer(grpc.Creds(creds))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func check(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func clientCreds(t *testing.T, f tlsutil.ClientFiles) credentials.TransportCredentials {
	t.Helper()
	c, err := tlsutil.ClientCredentials(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServerTLS(t *testing.T) {
	certs := tlstest.Generate(t)
	creds, err := tlsutil.ServerCredentials(tlsutil.ServerFiles{CertFile: certs.Server.CertFile, KeyFile: certs.Server.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHealth(t, creds)
	other := tlstest.NewCA(t, "other CA")
	tests := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"trusted CA", clientCreds(t, tlsutil.ClientFiles{CAFile: certs.CA.CertFile}), true},
		{"plaintext", insecure.NewCredentials(), false},
		{"untrusted CA", clientCreds(t, tlsutil.ClientFiles{CAFile: other.CertFile}), false},
		{"wrong server name", clientCreds(t, tlsutil.ClientFiles{CAFile: certs.CA.CertFile, ServerName: "example.org"}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := check(t, addr, tt.creds); (err == nil) != tt.ok {
				t.Errorf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestServerMutualTLS(t *testing.T) {
	certs := tlstest.Generate(t)
	creds, err := tlsutil.ServerCredentials(tlsutil.ServerFiles{
		CertFile: certs.Server.CertFile, KeyFile: certs.Server.KeyFile, ClientCAFile: certs.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHealth(t, creds)
	other := tlstest.NewCA(t, "other CA")
	stranger := other.Issue(t, "stranger")
	tests := []struct {
		name string
		f    tlsutil.ClientFiles
		ok   bool
	}{
		{"client certificate", tlsutil.ClientFiles{CAFile: certs.CA.CertFile, CertFile: certs.Client.CertFile, KeyFile: certs.Client.KeyFile}, true},
		{"no client certificate", tlsutil.ClientFiles{CAFile: certs.CA.CertFile}, false},
		{"certificate of another CA", tlsutil.ClientFiles{CAFile: certs.CA.CertFile, CertFile: stranger.CertFile, KeyFile: stranger.KeyFile}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := check(t, addr, clientCreds(t, tt.f)); (err == nil) != tt.ok {
				t.Errorf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestMetricsListenerMutualTLS(t *testing.T) {
	certs := tlstest.Generate(t)
	conf, err := tlsutil.Server(tlsutil.ServerFiles{
		CertFile: certs.Server.CertFile, KeyFile: certs.Server.KeyFile, ClientCAFile: certs.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := metrics.Listen("127.0.0.1:0", metrics.New().Handler(nil), conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hs.Close() })
	url := "https://" + hs.Addr().String() + "/healthz"
	get := func(f tlsutil.ClientFiles) error {
		c, err := tlsutil.Client(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: c}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 3 * time.Second}).Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(tlsutil.ClientFiles{CAFile: certs.CA.CertFile, CertFile: certs.Client.CertFile, KeyFile: certs.Client.KeyFile}); err != nil {
		t.Errorf("with a client certificate: %v", err)
	}
	if err := get(tlsutil.ClientFiles{CAFile: certs.CA.CertFile}); err == nil {
		t.Error("without a client certificate: got a response")
	}
}

func TestCertificateReload(t *testing.T) {
	certs := tlstest.Generate(t)
	conf, err := tlsutil.Server(tlsutil.ServerFiles{CertFile: certs.Server.CertFile, KeyFile: certs.Server.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	first, err := conf.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	// A renewed certificate (another CA here, to tell them apart) replaces
	// the files; the next handshake uses it.
	renewed := tlstest.NewCA(t, "renewing CA").Issue(t, "server", "127.0.0.1")
	for _, p := range [][2]string{{renewed.CertFile, certs.Server.CertFile}, {renewed.KeyFile, certs.Server.KeyFile}} {
		data, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(p[1], later, later); err != nil {
			t.Fatal(err)
		}
	}
	second, err := conf.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(first.Certificate[0]) == string(second.Certificate[0]) {
		t.Error("certificate not reloaded after its files changed")
	}
}

// authServer is an nsqd auth server (--auth-http-address): it grants
// publish and subscribe on everything to secret and nothing to anyone else.
func authServer(t *testing.T, secret string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/auth" || r.URL.Query().Get("secret") != secret {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"ttl": 3600, "identity": "qgate",
			"authorizations": []map[string]any{{
				"topic": ".*", "channels": []string{".*"}, "permissions": []string{"publish", "subscribe"},
			}},
		})
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestNSQTLSAndAuth(t *testing.T) {
	certs := tlstest.Generate(t)
	const secret = "nsq-auth-secret"
	node := nsqdtest.StartNode(t, nsqd.Options{
		DataDir: t.TempDir(),
		Tune: func(o *nsqio.Options) {
			o.TLSCert = certs.Server.CertFile
			o.TLSKey = certs.Server.KeyFile
			o.TLSRequired = nsqio.TLSRequired
			o.AuthHTTPAddresses = []string{authServer(t, secret)}
		},
	})
	clientTLS, err := tlsutil.Client(tlsutil.ClientFiles{CAFile: certs.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(tlsConf *tls.Config, authSecret string) error {
		c := gonsq.NewConfig()
		c.DialTimeout = time.Second
		tlsutil.ConfigureNSQ(c, tlsConf, authSecret)
		p, err := gonsq.NewProducer(node.TCPAddr, c)
		if err != nil {
			t.Fatal(err)
		}
		p.SetLogger(nil, gonsq.LogLevelError)
		defer p.Stop()
		return p.Publish("tls_test", []byte("hello"))
	}
	if err := publish(clientTLS, secret); err != nil {
		t.Errorf("TLS and the right secret: %v", err)
	}
	if err := publish(nil, secret); err == nil {
		t.Error("without TLS: publish succeeded")
	}
	if err := publish(clientTLS, "wrong"); err == nil {
		t.Error("with a wrong secret: publish succeeded")
	}
	untrusted, err := tlsutil.Client(tlsutil.ClientFiles{CAFile: tlstest.NewCA(t, "other").CertFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := publish(untrusted, secret); err == nil {
		t.Error("with an untrusted server certificate: publish succeeded")
	}
}
