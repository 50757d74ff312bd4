package service

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/backends"
)

// errShutdown ends streams on Queue.Shutdown.
var errShutdown = status.Error(codes.Unavailable, "qgate is shutting down; reconnect to another instance or retry later")

// toStatus maps an error from a backend (or from the service itself) to a
// gRPC status error. It is the only place where backend errors become codes.
// Errors that are already status errors pass unchanged. Unclassified errors
// become INTERNAL and are logged: a backend should wrap one of the backends
// sentinels.
func toStatus(logger *slog.Logger, op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, op+": deadline exceeded; outcome unknown")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, op+": cancelled")
	case errors.Is(err, backends.ErrUnavailable):
		return status.Error(codes.Unavailable, op+": "+err.Error())
	case errors.Is(err, backends.ErrClosed):
		return status.Error(codes.Unavailable, op+": qgate is shutting down ("+err.Error()+")")
	case errors.Is(err, backends.ErrUnknownDelivery):
		return status.Error(codes.NotFound, op+": "+err.Error())
	case errors.Is(err, backends.ErrNotFound):
		return status.Error(codes.NotFound, op+": "+err.Error())
	case errors.Is(err, backends.ErrRejected):
		// Validation should have caught it; the store's reason is the
		// clearest message the client can get.
		return status.Error(codes.InvalidArgument, op+": the message store refused the request ("+err.Error()+"); fix the request, do not retry it")
	}
	logger.Error("unclassified backend error", "op", op, "err", err)
	return status.Error(codes.Internal, op+": "+err.Error())
}
