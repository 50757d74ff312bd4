package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"

	"google.golang.org/grpc"

	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/config"
	"github.com/qgate/qgate/internal/limits"
	"github.com/qgate/qgate/internal/metrics"
	"github.com/qgate/qgate/internal/server"
	"github.com/qgate/qgate/internal/tlsutil"
	"github.com/qgate/qgate/service"
)

// startServer builds the gRPC server with the interceptor chain of issue 6,
// outermost first:
//
//	metrics   counts and times every call, rejected ones too
//	logging   (server) one line per finished call
//	auth      selector(auth.Protected): health and reflection need no token
//	limits    per-token rate and subscriptions; keys on auth's token name
//	recovery  (server) a panic becomes INTERNAL
//
// and the listener's TLS and per-connection limits as server options.
func (g *gateway) startServer() error {
	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	tokens := g.allTokens(g.tokens)
	if len(tokens) > 0 {
		store, err := auth.NewStore(tokens)
		if err != nil {
			return err
		}
		g.authn = auth.New(store)
		unary = append(unary, g.authn.UnaryServerInterceptor())
		stream = append(stream, g.authn.StreamServerInterceptor())
		g.log.Info("auth on", "tokens", store.Len())
	} else {
		g.log.Warn("auth off: no tokens in the config file and no $" + auth.EnvToken)
	}
	lim := limits.New(g.opsLimits)
	unary = append(unary, lim.UnaryServerInterceptor())
	stream = append(stream, lim.StreamServerInterceptor())
	opts := lim.ServerOptions()
	if g.tls.CertFile != "" {
		creds, err := tlsutil.ServerCredentials(serverFiles(g.tls))
		if err != nil {
			return err
		}
		opts = append(opts, grpc.Creds(creds))
	}
	var err error
	admin := service.NewAdmin(g.pool, service.WithLogger(g.log), service.WithDefaultReplicas(g.replicas))
	g.srv, err = server.New(server.Config{
		Addr:            g.listen,
		Logger:          g.log,
		Queue:           g.queue,
		Admin:           admin,
		OnShutdown:      []func(){g.queue.BeginShutdown, admin.BeginShutdown},
		ShutdownTimeout: g.shutdownTimeout,
		MaxRecvMsgSize:  limits.MaxRecvMsgSize(g.queue.Limits().MaxBatchBytes),
		FirstUnary:      []grpc.UnaryServerInterceptor{g.metrics.UnaryServerInterceptor()},
		FirstStream:     []grpc.StreamServerInterceptor{g.metrics.StreamServerInterceptor()},
		Unary:           unary,
		Stream:          stream,
		ServerOptions:   opts,
	})
	if err != nil {
		return err
	}
	g.metrics.InitializeGRPC(g.srv.GRPC())
	return nil
}

// startMetrics opens the metrics listener unless it is off. /readyz is
// ready while some node takes writes.
func (g *gateway) startMetrics() error {
	if g.metricsAddr == "off" {
		return nil
	}
	var tlsConf *tls.Config
	if g.tls.CertFile != "" {
		c, err := tlsutil.Server(serverFiles(g.tls))
		if err != nil {
			return err
		}
		tlsConf = c
	}
	hs, err := metrics.Listen(g.metricsAddr, g.metrics.Handler(g.pool.Writable), tlsConf, g.log)
	if err != nil {
		return err
	}
	g.metricsSrv = hs
	g.log.Info("serving metrics", "addr", hs.Addr().String(), "tls", tlsConf != nil)
	return nil
}

func serverFiles(t config.TLS) tlsutil.ServerFiles {
	return tlsutil.ServerFiles{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile}
}

// allTokens is the file's tokens plus the one of $QGATE_TOKEN, if set.
func (g *gateway) allTokens(file []auth.Token) []auth.Token {
	tokens := append([]auth.Token(nil), file...)
	if tok, ok := auth.FromEnv(g.getenv); ok {
		tokens = append(tokens, tok)
	}
	return tokens
}

// reloadTokens rereads the config file's tokens and replaces the store's:
// new calls see them at once, open streams of revoked tokens end.
func (g *gateway) reloadTokens() error {
	if g.authn == nil {
		return errors.New("auth is off (no tokens at start); restart qgate to turn it on")
	}
	if g.configPath == "" {
		return errors.New("no --config to reload")
	}
	file, err := config.Load(g.configPath)
	if err != nil {
		return err
	}
	tokens := g.allTokens(file.Auth.Tokens)
	if len(tokens) == 0 {
		return errors.New("the reloaded config has no tokens; keeping the old ones (restart qgate to turn auth off)")
	}
	if err := g.authn.Store().Replace(tokens); err != nil {
		return err
	}
	g.log.Info("tokens reloaded", "tokens", len(tokens))
	return nil
}

// watchReload reloads the tokens on every signal of reload until the
// returned stop is called.
func (g *gateway) watchReload(reload <-chan os.Signal) (stop func()) {
	if reload == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-reload:
				if err := g.reloadTokens(); err != nil {
					g.log.Error("reload failed; the old tokens stay", "err", fmt.Errorf("reload: %w", err))
				}
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}
