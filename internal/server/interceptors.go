package server

import (
	"context"
	"log/slog"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// interceptors is the server's interceptor chain, outermost first. Each
// interceptor sees the calls and results of the ones after it, so the order
// matters:
//
//   - cfg.First*: metrics (issue 6), to count every call, also rejected ones;
//   - logging: one line per finished call with method, code and duration;
//   - cfg.Unary/Stream: selector(auth, skipping health and reflection) and
//     limits (issue 6);
//   - recovery last, next to the handler: a panic becomes INTERNAL before
//     logging and metrics see the result.
func interceptors(cfg Config) []grpc.ServerOption {
	logger := slogLogger(cfg.Logger)
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(codeToLevel),
	}
	recoveryOpt := recovery.WithRecoveryHandlerContext(recoverPanic(cfg.Logger))

	var unary []grpc.UnaryServerInterceptor
	unary = append(unary, cfg.FirstUnary...)
	unary = append(unary, logging.UnaryServerInterceptor(logger, logOpts...))
	unary = append(unary, cfg.Unary...)
	unary = append(unary, recovery.UnaryServerInterceptor(recoveryOpt))

	var stream []grpc.StreamServerInterceptor
	stream = append(stream, cfg.FirstStream...)
	stream = append(stream, logging.StreamServerInterceptor(logger, logOpts...))
	stream = append(stream, cfg.Stream...)
	stream = append(stream, recovery.StreamServerInterceptor(recoveryOpt))

	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
}

// slogLogger adapts a *slog.Logger to the logging interceptor.
func slogLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// codeToLevel keeps the access log of successful calls at Debug (a gateway
// serves many), and reports failures the way the middleware's default does:
// the client's mistakes at Info, unavailability and timeouts at Warn, server
// faults at Error.
func codeToLevel(c codes.Code) logging.Level {
	if c == codes.OK {
		return logging.LevelDebug
	}
	return logging.DefaultServerCodeToLevel(c)
}

// recoverPanic turns a handler's panic into INTERNAL and logs it with the
// stack; the process and every other call go on.
func recoverPanic(logger *slog.Logger) recovery.RecoveryHandlerFuncContext {
	return func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "internal error")
	}
}
