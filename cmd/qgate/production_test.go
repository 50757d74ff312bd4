package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/tlsutil"
	"github.com/qgate/qgate/internal/tlsutil/tlstest"
)

const e2eSecret = "app-secret-0123456789abcdef"

// writeTokensConfig writes a config file of two embedded nodes, checked
// every 100ms, with the given auth.tokens entries (YAML flow mappings, one
// a line).
func writeTokensConfig(t *testing.T, path string, tokens ...string) {
	t.Helper()
	yaml := "mode: cluster\nembedded: 2\ncheck: {interval: 100ms, timeout: 500ms}\nauth:\n  tokens:\n"
	for _, tok := range tokens {
		yaml += "    - " + tok + "\n"
	}
	writeConfig(t, path, yaml)
}

// TestProductionWiring runs `qgate serve` as production would — mutual TLS
// on the gRPC and metrics listeners, bearer tokens, limits — and checks the
// whole path: TLS and token rejections, ACLs, send, subscribe, ack, nack and
// redelivery, the metrics those leave, and revocation of an open stream.
func TestProductionWiring(t *testing.T) {
	certs := tlstest.Generate(t)
	path := filepath.Join(t.TempDir(), "qgate.yaml")
	app := fmt.Sprintf(`{name: app, secret: %q, send: ["e2e.*"], subscribe: ["e2e.*"]}`, e2eSecret)
	ops := fmt.Sprintf(`{name: ops, secret: %q, admin: true}`, adminSecret)
	writeTokensConfig(t, path, app, ops)
	g := startServeEnv(t, nil, "--config", path, "--replicas", "1",
		"--max-subscriptions-per-token", "4", "--rate-per-token", "1000", "--max-streams", "100",
		"--tls-cert", certs.Server.CertFile, "--tls-key", certs.Server.KeyFile, "--tls-client-ca", certs.CA.CertFile)
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
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+e2eSecret)
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
		`qgate_node_state{group="nsqd-0",node="nsqd-0",state="up"} 1`,
		`grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="Send",grpc_service="qgate.v1.QueueService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="PermissionDenied",grpc_method="Send",grpc_service="qgate.v1.QueueService",grpc_type="unary"} 1`,
	}
	// Acks reach the backend after the delivery loop above has sent them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, page := get(t, hc, "https://"+g.metricsAddr+"/metrics")
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

	// Revoking the token (a reload without it) ends the open subscription.
	writeTokensConfig(t, path, ops)
	g.reload <- syscall.SIGHUP
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
