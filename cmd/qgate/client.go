package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/client"
	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/tlsutil"
)

// defaultAddr is where the client commands find qgate, serve's default.
const defaultAddr = "127.0.0.1:7070"

// clientFlags are the connection flags of the client commands.
type clientFlags struct {
	addr                   string
	token                  string
	tls, insecure          bool
	tlsCA, tlsCert, tlsKey string
}

// addClientFlags registers the connection flags on fs.
func addClientFlags(fs *flagSet) *clientFlags {
	c := &clientFlags{}
	fs.StringVar(&c.addr, "addr", defaultAddr, "qgate's gRPC address")
	fs.StringVar(&c.token, "token", "", "bearer token to send (default $"+auth.EnvToken+")")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (implied by --tls-ca, --tls-cert and --insecure; default CAs: the system's)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM CA certificates that sign qgate's certificate")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM client certificate, for a qgate with mutual TLS (with --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.BoolVar(&c.insecure, "insecure", false, "TLS without checking qgate's certificate (tests and emergencies only)")
	return c
}

// dial connects to qgate as the flags say. The connection is made lazily:
// the first RPC reports an unreachable server or a failed handshake.
func (c *clientFlags) dial(e *env) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.tls || c.insecure || c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != "" {
		var err error
		creds, err = tlsutil.ClientCredentials(tlsutil.ClientFiles{CAFile: c.tlsCA,
			CertFile: c.tlsCert, KeyFile: c.tlsKey, InsecureSkipVerify: c.insecure})
		if err != nil {
			return nil, err
		}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	token := c.token
	if token == "" {
		token = e.env(auth.EnvToken)
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.NewClient(c.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.addr, err)
	}
	return conn, nil
}

// client returns a qgate client as the flags say. Like dial, it connects
// lazily.
func (c *clientFlags) client(ctx context.Context, e *env) (*client.Client, error) {
	var opts []client.Option
	if c.tls || c.insecure || c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != "" {
		conf, err := tlsutil.Client(tlsutil.ClientFiles{CAFile: c.tlsCA,
			CertFile: c.tlsCert, KeyFile: c.tlsKey, InsecureSkipVerify: c.insecure})
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLS(conf))
	}
	token := c.token
	if token == "" {
		token = e.env(auth.EnvToken)
	}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return client.New(ctx, c.addr, opts...)
}

// bearer sends a token as "authorization: Bearer <token>". It is sent over
// plaintext too (a gateway on loopback); use TLS across a network.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + strings.TrimSpace(string(b))}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

var _ credentials.PerRPCCredentials = bearer("")

// streamErr maps the end of a stream to the command's result: a normal end
// or an interrupt is success.
func streamErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case ctx.Err() != nil && status.Code(err) == codes.Canceled:
		return nil
	}
	return err
}
