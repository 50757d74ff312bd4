package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/qgate/qgate/internal/auth"
)

// TLS names the PEM files of a TLS listener; all empty: plaintext.
type TLS struct {
	CertFile, KeyFile string
	// ClientCAFile, if set, turns on mutual TLS.
	ClientCAFile string
}

// NSQD configures qgate's connections to nsqd.
type NSQD struct {
	// TLS turns on TLS to nsqd (implied by TLSCAFile and TLSCertFile).
	TLS bool
	// TLSCAFile holds the CAs of nsqd's certificates; empty: the system's.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a client certificate for nsqd.
	TLSCertFile, TLSKeyFile string
	// AuthSecret is sent with AUTH (nsqd --auth-http-address).
	AuthSecret string
}

// Auth holds the bearer tokens of the file.
type Auth struct {
	// Tokens have their secrets resolved (secret_file, secret_env read).
	Tokens []auth.Token
}

type rawTLS struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

type rawNSQD struct {
	TLS            bool   `yaml:"tls"`
	TLSCA          string `yaml:"tls_ca"`
	TLSCert        string `yaml:"tls_cert"`
	TLSKey         string `yaml:"tls_key"`
	AuthSecret     string `yaml:"auth_secret"`
	AuthSecretFile string `yaml:"auth_secret_file"`
}

type rawAuth struct {
	Tokens []rawToken `yaml:"tokens"`
}

type rawToken struct {
	Name       string   `yaml:"name"`
	Secret     string   `yaml:"secret"`
	SecretFile string   `yaml:"secret_file"`
	SecretEnv  string   `yaml:"secret_env"`
	Send       []string `yaml:"send"`
	Subscribe  []string `yaml:"subscribe"`
	Admin      bool     `yaml:"admin"`
}

// ops checks the operations sections (metrics, TLS, nsqd, auth, the
// per-connection and per-token limits) and fills them into f.
func (c *checker) ops(r *rawFile, f *File) {
	f.MetricsListen = r.MetricsListen
	if r.MetricsListen != "" && r.MetricsListen != "off" {
		if _, _, err := net.SplitHostPort(r.MetricsListen); err != nil {
			c.fail("metrics_listen", "%s (want host:port, :port or off)", addrErrMsg(err))
		}
	}
	f.TLS = TLS{
		CertFile:     c.fileName("tls.cert", r.TLS.Cert),
		KeyFile:      c.fileName("tls.key", r.TLS.Key),
		ClientCAFile: c.fileName("tls.client_ca", r.TLS.ClientCA),
	}
	c.pair("tls.cert", "tls.key", r.TLS.Cert, r.TLS.Key)
	if r.TLS.ClientCA != "" && r.TLS.Cert == "" {
		c.fail("tls.client_ca", "mutual TLS needs the server's own cert and key")
	}

	n := r.NSQD
	f.NSQD = NSQD{
		TLS:         n.TLS || n.TLSCA != "" || n.TLSCert != "",
		TLSCAFile:   c.fileName("nsqd.tls_ca", n.TLSCA),
		TLSCertFile: c.fileName("nsqd.tls_cert", n.TLSCert),
		TLSKeyFile:  c.fileName("nsqd.tls_key", n.TLSKey),
		AuthSecret:  n.AuthSecret,
	}
	c.pair("nsqd.tls_cert", "nsqd.tls_key", n.TLSCert, n.TLSKey)
	if c.present("nsqd.tls") && !n.TLS && f.NSQD.TLS {
		c.fail("nsqd.tls", "false, but tls_ca or tls_cert is set")
	}
	if n.AuthSecretFile != "" {
		if n.AuthSecret != "" {
			c.fail("nsqd.auth_secret_file", "give auth_secret or auth_secret_file, not both")
		} else {
			f.NSQD.AuthSecret = c.readSecret("nsqd.auth_secret_file", n.AuthSecretFile)
		}
	}

	c.tokens(r.Auth.Tokens, f)

	l := r.Limits
	if c.present("limits.max_streams") && (l.MaxStreams < 1 || l.MaxStreams > math.MaxUint32) {
		c.fail("limits.max_streams", "must be 1 to %d (leave it out for no limit)", uint32(math.MaxUint32))
	} else {
		f.Limits.MaxStreams = uint32(l.MaxStreams)
	}
	f.Limits.MaxSubscriptionsPerToken = int(c.positive("limits.max_subscriptions_per_token", int64(l.MaxSubscriptionsPerToken)))
	if c.present("limits.rate_per_token") && l.RatePerToken <= 0 {
		c.fail("limits.rate_per_token", "must be positive (requests per second; leave it out for no limit)")
	}
	f.Limits.RatePerToken = l.RatePerToken
	f.Limits.RateBurst = int(c.positive("limits.rate_burst", int64(l.RateBurst)))
	if c.present("limits.rate_burst") && !c.present("limits.rate_per_token") {
		c.fail("limits.rate_burst", "needs rate_per_token")
	}
}

// tokens checks the auth tokens and resolves their secrets.
func (c *checker) tokens(raw []rawToken, f *File) {
	names := map[string]string{}
	secrets := map[string]string{}
	for i, t := range raw {
		p := fmt.Sprintf("auth.tokens[%d]", i)
		tok := auth.Token{Name: t.Name, Send: t.Send, Subscribe: t.Subscribe, Admin: t.Admin}
		if t.Name == "" {
			c.fail(p+".name", "missing: a token needs a name (for logs and limits)")
		} else if prev, dup := names[t.Name]; dup {
			c.fail(p+".name", "token name %q is also used by %s", t.Name, prev)
		} else {
			names[t.Name] = p
		}
		tok.Secret = c.secret(p, t)
		if tok.Secret != "" {
			if prev, dup := secrets[tok.Secret]; dup {
				c.fail(p+".secret", "the same secret as %s", prev)
			}
			secrets[tok.Secret] = p
		}
		for _, list := range []struct {
			key      string
			patterns []string
		}{{"send", t.Send}, {"subscribe", t.Subscribe}} {
			for j, pat := range list.patterns {
				pp := fmt.Sprintf("%s.%s[%d]", p, list.key, j)
				if pat == "" {
					c.fail(pp, "empty pattern")
				} else if _, err := path.Match(pat, ""); err != nil {
					c.fail(pp, "pattern %q: %v", pat, err)
				}
			}
		}
		f.Auth.Tokens = append(f.Auth.Tokens, tok)
	}
}

// secret resolves the one secret source of a token at p.
func (c *checker) secret(p string, t rawToken) string {
	var sources []string
	for k, v := range map[string]string{"secret": t.Secret, "secret_file": t.SecretFile, "secret_env": t.SecretEnv} {
		if v != "" {
			sources = append(sources, k)
		}
	}
	var s, field string
	switch {
	case len(sources) == 0:
		c.fail(p+".secret", "missing: give secret, secret_file or secret_env")
		return ""
	case len(sources) > 1:
		c.fail(p+".secret", "give one of secret, secret_file and secret_env")
		return ""
	case t.Secret != "":
		s, field = t.Secret, p+".secret"
	case t.SecretFile != "":
		field = p + ".secret_file"
		if s = c.readSecret(field, t.SecretFile); s == "" {
			return "" // reported
		}
	default:
		field = p + ".secret_env"
		if s = os.Getenv(t.SecretEnv); s == "" {
			c.fail(field, "environment variable %s is not set", t.SecretEnv)
			return ""
		}
	}
	if len(s) < auth.MinSecretLen {
		c.fail(field, "the secret is shorter than %d bytes", auth.MinSecretLen)
	}
	return s
}

// readSecret reads a secret file given at p, without its trailing newline.
func (c *checker) readSecret(p, name string) string {
	b, err := os.ReadFile(c.resolve(name))
	if err != nil {
		c.fail(p, "%v", fileErr(err))
		return ""
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		c.fail(p, "%s is empty", name)
	}
	return s
}

// file resolves a file name given at p and checks that it can be read.
func (c *checker) fileName(p, name string) string {
	if name == "" {
		return ""
	}
	full := c.resolve(name)
	f, err := os.Open(full)
	if err != nil {
		c.fail(p, "%v", fileErr(err))
		return full
	}
	_ = f.Close()
	return full
}

// pair checks that a certificate and its key come together.
func (c *checker) pair(certPath, keyPath, cert, key string) {
	switch {
	case cert != "" && key == "":
		c.fail(keyPath, "missing: the key of %s", certPath)
	case cert == "" && key != "":
		c.fail(certPath, "missing: the certificate of %s", keyPath)
	}
}

// resolve makes a relative file name relative to the config file.
func (c *checker) resolve(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(filepath.Dir(c.decoder.file), name)
}

// fileErr drops the "open" op from a file error.
func fileErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}
