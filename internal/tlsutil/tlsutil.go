// Package tlsutil builds the TLS configurations of qgate's listeners and of
// its connections to nsqd from PEM files.
//
//   - Server: the gRPC listener (ServerCredentials) and the metrics HTTP
//     listener (Server's *tls.Config). With ClientCAFile set it is mutual
//     TLS: every client must present a certificate signed by that CA.
//   - Client: the connections to nsqd (ConfigureNSQ: go-nsq's TLS upgrade
//     and the AUTH secret nsqd checks against its --auth-http-address),
//     and qgate's own CLI connecting to a TLS qgate.
//
// Certificates and keys are read again when their files change (checked at
// each handshake, by modification time), so a renewed certificate takes
// effect without a restart. Package tlstest makes certificates for tests.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	gonsq "github.com/nsqio/go-nsq"
	"google.golang.org/grpc/credentials"
)

// ServerFiles names the PEM files of a TLS listener.
type ServerFiles struct {
	// CertFile and KeyFile are the server's certificate (chain) and key.
	// Required.
	CertFile, KeyFile string
	// ClientCAFile, if set, turns on mutual TLS: clients must present a
	// certificate signed by a CA in this file.
	ClientCAFile string
}

// Server returns the TLS configuration of a listener: TLS 1.2 or later,
// the certificate reloaded when its files change, and client certificates
// required and verified when ClientCAFile is set.
func Server(f ServerFiles) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("tlsutil: server: a certificate and a key file are both required")
	}
	kp, err := newKeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: server: %w", err)
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.get()
		},
	}
	if f.ClientCAFile != "" {
		pool, err := loadPool(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tlsutil: server: client CA: %w", err)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// ServerCredentials is Server as gRPC transport credentials, for
// grpc.Creds.
func ServerCredentials(f ServerFiles) (credentials.TransportCredentials, error) {
	conf, err := Server(f)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(conf), nil
}

// ClientFiles names the PEM files of a TLS client.
type ClientFiles struct {
	// CAFile holds the CAs that sign the servers' certificates. Empty
	// means the system's roots.
	CAFile string
	// CertFile and KeyFile, if set, are the client certificate presented to
	// a server that asks for one (mutual TLS). Both or neither.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server's certificate
	// (default: the host dialled). go-nsq always checks the host it dials.
	ServerName string
	// InsecureSkipVerify accepts any server certificate. For tests and
	// emergencies only: it gives up protection against impostors.
	InsecureSkipVerify bool
}

// Client returns the TLS configuration of a client: TLS 1.2 or later,
// the server checked against CAFile, and a client certificate reloaded when
// its files change.
func Client(f ClientFiles) (*tls.Config, error) {
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         f.ServerName,
		InsecureSkipVerify: f.InsecureSkipVerify, //nolint:gosec // documented, opt-in
	}
	if f.CAFile != "" {
		pool, err := loadPool(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tlsutil: client: CA: %w", err)
		}
		conf.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("tlsutil: client: a certificate needs its key file and a key its certificate")
	}
	if f.CertFile != "" {
		kp, err := newKeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tlsutil: client: %w", err)
		}
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return kp.get()
		}
	}
	return conf, nil
}

// ClientCredentials is Client as gRPC transport credentials, for
// grpc.WithTransportCredentials.
func ClientCredentials(f ClientFiles) (credentials.TransportCredentials, error) {
	conf, err := Client(f)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(conf), nil
}

// ConfigureNSQ sets a go-nsq Config for nsqd's TLS (when tlsConf is not
// nil: the connection is upgraded with TLS after IDENTIFY, and must be when
// nsqd runs with --tls-required) and AUTH secret (when authSecret is not
// empty: sent when nsqd runs with --auth-http-address). Call it on every
// producer and consumer config of the pool.
func ConfigureNSQ(c *gonsq.Config, tlsConf *tls.Config, authSecret string) {
	if tlsConf != nil {
		c.TlsV1 = true
		c.TlsConfig = tlsConf.Clone()
	}
	c.AuthSecret = authSecret
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}

// keyPair is a certificate and key loaded from files and loaded again
// when either file's modification time changes.
type keyPair struct {
	certFile, keyFile string

	mu              sync.Mutex
	cert            *tls.Certificate
	certMod, keyMod time.Time
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	return kp, nil
}

// get returns the current certificate, reloading it if its files changed.
// If a reload fails (a half-written file), the previous one is kept.
func (kp *keyPair) get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	cm, err1 := modTime(kp.certFile)
	km, err2 := modTime(kp.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		if kp.cert != nil {
			return kp.cert, nil
		}
		return nil, err
	}
	if kp.cert != nil && cm.Equal(kp.certMod) && km.Equal(kp.keyMod) {
		return kp.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		if kp.cert != nil {
			return kp.cert, nil
		}
		return nil, err
	}
	kp.cert, kp.certMod, kp.keyMod = &cert, cm, km
	return kp.cert, nil
}

func modTime(file string) (time.Time, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
