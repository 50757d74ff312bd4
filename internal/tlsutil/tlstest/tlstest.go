// Package tlstest makes a certificate authority, server and client
// certificates in a test's temporary directory, with crypto/x509 alone.
package tlstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority whose files live in a test's temp dir.
type CA struct {
	// Cert is the CA's certificate; CertFile holds it in PEM.
	Cert     *x509.Certificate
	CertFile string
	// Pool holds Cert.
	Pool *x509.CertPool

	key crypto.Signer
	dir string
}

// Pair names the PEM files of a certificate and its key.
type Pair struct {
	CertFile, KeyFile string
}

// Certs is a CA with a server certificate for the loopback addresses and
// "localhost", and a client certificate ("client").
type Certs struct {
	// Dir holds every file.
	Dir    string
	CA     *CA
	Server Pair
	Client Pair
}

// Generate makes a CA, a server certificate valid for 127.0.0.1, ::1 and
// localhost, and a client certificate with common name "client", in a new
// temp dir of t.
func Generate(t testing.TB) *Certs {
	t.Helper()
	ca := NewCA(t, "qgate test CA")
	return &Certs{
		Dir:    ca.dir,
		CA:     ca,
		Server: ca.Issue(t, "server", "127.0.0.1", "::1", "localhost"),
		Client: ca.Issue(t, "client"),
	}
}

// NewCA makes a self-signed CA named name in a new temp dir of t.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	dir := t.TempDir()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("tlstest: CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("tlstest: CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ca := &CA{Cert: cert, Pool: pool, key: key, dir: dir}
	ca.CertFile = writePEM(t, dir, "ca.crt", "CERTIFICATE", der)
	return ca
}

// Issue makes a certificate signed by ca with common name name, usable by
// servers and clients; hosts (IP addresses or DNS names) become its subject
// alternative names. The files are name.crt and name.key in ca's dir.
func (ca *CA) Issue(t testing.TB, name string, hosts ...string) Pair {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatalf("tlstest: issue %s: %v", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("tlstest: issue %s: %v", name, err)
	}
	return Pair{
		CertFile: writePEM(t, ca.dir, name+".crt", "CERTIFICATE", der),
		KeyFile:  writePEM(t, ca.dir, name+".key", "PRIVATE KEY", keyDER),
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("tlstest: key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("tlstest: serial: %v", err)
	}
	return n
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	file := filepath.Join(dir, name)
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	return file
}
