package service

import (
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

func TestAdminListAndDrain(t *testing.T) {
	env := startNSQMode(t, nsq.ModeFailover, 2)
	list, err := env.admin.ListNodes(t.Context(), &qgatev1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := list.GetNodes()
	if len(nodes) != 2 {
		t.Fatalf("ListNodes: %v", nodes)
	}
	for i, n := range nodes {
		wantRole := qgatev1.NodeRole_NODE_ROLE_PRIMARY
		if i > 0 {
			wantRole = qgatev1.NodeRole_NODE_ROLE_BACKUP
		}
		if n.GetTcpAddress() != env.nodes[i].TCPAddr || n.GetHttpAddress() != env.nodes[i].HTTPAddr ||
			n.GetPriority() != uint32(i) || n.GetRole() != wantRole || n.GetState() != qgatev1.NodeState_NODE_STATE_UP ||
			n.GetStateSince() == nil || n.GetLastCheck() == nil || n.GetActive() != (i == 0) {
			t.Errorf("node %d: %v", i, n)
		}
	}

	watch, err := env.admin.WatchNodes(t.Context(), &qgatev1.WatchNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if !ev.GetInitial() || ev.GetPreviousState() != qgatev1.NodeState_NODE_STATE_UNSPECIFIED || ev.GetNode().GetState() != qgatev1.NodeState_NODE_STATE_UP {
			t.Errorf("initial event %v", ev)
		}
	}

	for _, tc := range []struct {
		name string
		code codes.Code
	}{{"", codes.InvalidArgument}, {"nope", codes.NotFound}} {
		_, err := env.admin.DrainNode(t.Context(), &qgatev1.DrainNodeRequest{Name: tc.name})
		code, fields := violationFields(err)
		if code != tc.code || (tc.code == codes.InvalidArgument && !slices.Equal(fields, []string{"name"})) {
			t.Errorf("DrainNode(%q): got %v %q, want %v", tc.name, code, fields, tc.code)
		}
		if _, err := env.admin.UndrainNode(t.Context(), &qgatev1.UndrainNodeRequest{Name: tc.name}); status.Code(err) != tc.code {
			t.Errorf("UndrainNode(%q): got %v, want %v", tc.name, err, tc.code)
		}
	}

	drained, err := env.admin.DrainNode(t.Context(), &qgatev1.DrainNodeRequest{Name: "n0"})
	if err != nil {
		t.Fatal(err)
	}
	if drained.GetNode().GetState() != qgatev1.NodeState_NODE_STATE_DRAINING {
		t.Errorf("after DrainNode: %v", drained.GetNode())
	}
	ev := nextChange(t, watch, "n0")
	if ev.GetInitial() || ev.GetPreviousState() != qgatev1.NodeState_NODE_STATE_UP || ev.GetNode().GetState() != qgatev1.NodeState_NODE_STATE_DRAINING {
		t.Errorf("drain event %v", ev)
	}
	// Sends go to the backup while the primary drains.
	if _, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "dr", Messages: msgs("x")}); err != nil {
		t.Fatal(err)
	}
	undrained, err := env.admin.UndrainNode(t.Context(), &qgatev1.UndrainNodeRequest{Name: "n0"})
	if err != nil {
		t.Fatal(err)
	}
	if undrained.GetNode().GetState() != qgatev1.NodeState_NODE_STATE_UP {
		t.Errorf("after UndrainNode: %v", undrained.GetNode())
	}
	ev = nextChange(t, watch, "n0")
	if ev.GetPreviousState() != qgatev1.NodeState_NODE_STATE_DRAINING || ev.GetNode().GetState() != qgatev1.NodeState_NODE_STATE_UP {
		t.Errorf("undrain event %v", ev)
	}
}

// nextChange returns the next WatchNodes event about node name.
func nextChange(t *testing.T, watch grpc.ServerStreamingClient[qgatev1.WatchNodesResponse], name string) *qgatev1.WatchNodesResponse {
	t.Helper()
	for {
		ev, err := watch.Recv()
		if err == io.EOF || err != nil {
			t.Fatalf("watch: %v", err)
		}
		if ev.GetNode().GetName() == name {
			return ev
		}
	}
}

// TestHealth: SERVING while some node takes writes; draining every node
// makes it NOT_SERVING, undraining one makes it SERVING again, closing the
// pool makes it NOT_SERVING, and Watch clients see each change.
func TestHealth(t *testing.T) {
	env := startNSQ(t, 2)
	hs := health.NewServer()
	conn := serve(t, New(newFaultBackend()), nil, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	h := StartHealth(hs, env.pool)
	t.Cleanup(h.Stop)
	client := healthpb.NewHealthClient(conn)

	for _, svc := range HealthServices {
		resp, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check(%q): %v, %v", svc, resp, err)
		}
	}
	watch, err := client.Watch(t.Context(), &healthpb.HealthCheckRequest{Service: "qgate.v1.QueueService"})
	if err != nil {
		t.Fatal(err)
	}
	expect := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		start := time.Now()
		for {
			resp, err := watch.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetStatus() == want {
				t.Logf("%v after %v", want, time.Since(start).Round(time.Millisecond))
				return
			}
		}
	}
	expect(healthpb.HealthCheckResponse_SERVING)
	for _, name := range []string{"n0", "n1"} {
		if _, err := env.admin.DrainNode(t.Context(), &qgatev1.DrainNodeRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	expect(healthpb.HealthCheckResponse_NOT_SERVING)
	if _, err := env.admin.UndrainNode(t.Context(), &qgatev1.UndrainNodeRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	expect(healthpb.HealthCheckResponse_SERVING)

	// The pool closing ends its watch: nothing can take writes.
	if err := env.pool.Close(); err != nil {
		t.Fatal(err)
	}
	expect(healthpb.HealthCheckResponse_NOT_SERVING)
	h.Stop()
	h.Stop()
}

// An open WatchNodes stream must not hold a graceful stop: BeginShutdown
// ends it with UNAVAILABLE, and a new watch fails at once.
func TestAdminShutdownEndsWatch(t *testing.T) {
	env := startNSQ(t, 1)
	watch, err := env.admin.WatchNodes(t.Context(), &qgatev1.WatchNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	env.adminSrv.BeginShutdown()
	env.adminSrv.BeginShutdown() // safe twice
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("open watch ended with %v, want UNAVAILABLE", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("open watch not ended by BeginShutdown")
	}
	again, err := env.admin.WatchNodes(t.Context(), &qgatev1.WatchNodesRequest{})
	if err == nil {
		_, err = again.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("new watch after shutdown: %v, want UNAVAILABLE", err)
	}
}
