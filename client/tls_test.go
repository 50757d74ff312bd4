package client_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/client"
	"github.com/qgate/qgate/internal/tlsutil"
	"github.com/qgate/qgate/internal/tlsutil/tlstest"
)

// TestMutualTLS: WithTLS with a client certificate reaches a gateway that
// requires one; without the certificate, publishing fails.
func TestMutualTLS(t *testing.T) {
	certs := tlstest.Generate(t)
	serverTLS, err := tlsutil.Server(tlsutil.ServerFiles{CertFile: certs.Server.CertFile, KeyFile: certs.Server.KeyFile,
		ClientCAFile: certs.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, gatewayOptions{tls: serverTLS})

	withCert, err := tlsutil.Client(tlsutil.ClientFiles{CAFile: certs.CA.CertFile,
		CertFile: certs.Client.CertFile, KeyFile: certs.Client.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	p := newClient(t, e.gw.addr, client.WithTLS(withCert)).Publisher("tls", client.PublishSettings{})
	publishOne(t, p, "over mTLS")
	p.Stop()

	noCert, err := tlsutil.Client(tlsutil.ClientFiles{CAFile: certs.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	p = newClient(t, e.gw.addr, client.WithTLS(noCert)).Publisher("tls", client.PublishSettings{Timeout: 500 * time.Millisecond})
	defer p.Stop()
	if _, err := p.Publish(context.Background(), &client.Message{Body: []byte("x")}).Get(context.Background()); status.Code(err) != codes.Unavailable {
		t.Errorf("mTLS without a client certificate: %v, want UNAVAILABLE", err)
	}
}
