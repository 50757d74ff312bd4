package ops_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/limits"
	"github.com/qgate/qgate/internal/tlsutil"
	"github.com/qgate/qgate/internal/tlsutil/tlstest"
)

const appSecret = "app-secret-0123456789abcdef"

// TestProductionWiring runs a gateway as production would — mutual TLS on
// the gRPC and metrics listeners, bearer tokens, limits — and checks the
// whole path: TLS and token rejections, ACLs, send, subscribe, ack, nack and
// redelivery, the metrics those leave, and revocation of an open stream.
func TestProductionWiring(t *testing.T) {
	certs := tlstest.Generate(t)
	serverTLS, err := tlsutil.Server(tlsutil.ServerFiles{
		CertFile: certs.Server.CertFile, KeyFile: certs.Server.KeyFile, ClientCAFile: certs.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gatewayOptions{
		tokens: []auth.Token{{Name: "app", Secret: appSecret, Send: []string{"e2e.*"}, Subscribe: []string{"e2e.*"}}},
		limits: limits.Config{MaxSubscriptionsPerToken: 4, Rate: 1000, MaxConcurrentStreams: 100},
		tls:    serverTLS,
	})
	clientFiles := tlsutil.ClientFiles{CAFile: certs.CA.CertFile, CertFile: certs.Client.CertFile, KeyFile: certs.Client.KeyFile}
	creds, err := tlsutil.ClientCredentials(clientFiles)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+appSecret)
	q := qgatev1.NewQueueServiceClient(conn)

	// Without a client certificate the TLS handshake fails.
	noCert, err := tlsutil.ClientCredentials(tlsutil.ClientFiles{CAFile: certs.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(noCert))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	shortCtx, shortCancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = healthpb.NewHealthClient(bare).Check(shortCtx, &healthpb.HealthCheckRequest{})
	shortCancel()
	if err == nil {
		t.Error("health without a client certificate: got an answer")
	}

	// Health needs no token; Send needs one, and a topic its ACL grants.
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without token: %v", err)
	}
	msgs := func(bodies ...string) []*qgatev1.Message {
		var out []*qgatev1.Message
		for _, b := range bodies {
			out = append(out, &qgatev1.Message{Body: []byte(b)})
		}
		return out
	}
	if _, err := q.Send(ctx, &qgatev1.SendRequest{Topic: "e2e.orders", Messages: msgs("x")}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("send without token: got %v, want Unauthenticated", err)
	}
	if _, err := q.Send(authed, &qgatev1.SendRequest{Topic: "e2e_orders", Messages: msgs("x")}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("send outside the ACL: got %v, want PermissionDenied", err)
	}
	if _, err := q.Send(authed, &qgatev1.SendRequest{Topic: "e2e.orders", Messages: msgs("ack", "nack")}); err != nil {
		t.Fatalf("send: %v", err)
	}

	// Subscribe: ack one, nack the other and ack its redelivery.
	sub, err := q.Subscribe(authed)
	if err != nil {
		t.Fatal(err)
	}
	open := &qgatev1.SubscribeRequest_Open{Topic: "e2e.orders", Channel: "c", MaxInFlight: 10, AckDeadline: durationpb.New(30 * time.Second)}
	if err := sub.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
		t.Fatal(err)
	}
	attempts := map[string][]uint32{}
	for len(attempts["ack"]) < 1 || len(attempts["nack"]) < 2 {
		resp, err := sub.Recv()
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		d := resp.GetDelivery()
		if d == nil {
			continue
		}
		body := string(d.GetBody())
		attempts[body] = append(attempts[body], d.GetAttempt())
		var req *qgatev1.SubscribeRequest
		if body == "nack" && d.GetAttempt() == 1 {
			req = &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Nack_{Nack: &qgatev1.SubscribeRequest_Nack{AckIds: []string{d.GetAckId()}}}}
		} else {
			req = &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Ack_{Ack: &qgatev1.SubscribeRequest_Ack{AckIds: []string{d.GetAckId()}}}}
		}
		if err := sub.Send(req); err != nil {
			t.Fatal(err)
		}
	}

	// Metrics, over the mutual-TLS metrics listener.
	mtls, err := tlsutil.Client(clientFiles)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: mtls}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	want := []string{
		`qgate_deliveries_total{channel="c",topic="e2e.orders"} 3`,
		`qgate_redeliveries_total{channel="c",topic="e2e.orders"} 1`,
		`qgate_acks_total{channel="c",topic="e2e.orders"} 2`,
		`qgate_nacks_total{channel="c",topic="e2e.orders"} 1`,
		`qgate_send_duration_seconds_count{topic="e2e.orders"} 1`,
		`qgate_node_state{group="127.0.0.1`,
		`grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="Send",grpc_service="qgate.v1.QueueService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="PermissionDenied",grpc_method="Send",grpc_service="qgate.v1.QueueService",grpc_type="unary"} 1`,
	}
	// Acks reach the backend after the delivery loop above has sent them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		page := g.scrape(t, hc)
		var missing []string
		for _, w := range want {
			if !strings.Contains(page, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := hc.Get("https://" + g.metricsAddr + "/readyz"); err != nil {
		t.Errorf("readyz: %v", err)
	}

	// Revoking the token ends the open subscription.
	if err := g.store.Replace(nil); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := sub.Recv()
		if err == io.EOF {
			t.Fatal("subscription ended OK after its token was revoked")
		}
		if err != nil {
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("subscription after revocation: got %v, want Unauthenticated", err)
			}
			break
		}
	}
}
