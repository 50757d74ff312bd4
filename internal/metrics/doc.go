// Package metrics exposes qgate's Prometheus metrics, and /healthz and
// /readyz, on an HTTP listener (default 127.0.0.1:7071).
//
// A Metrics has its own registry (never the global default one), holding
// the Go and process collectors, the gRPC server metrics of go-grpc-middleware's
// prometheus provider (grpc_server_started_total, grpc_server_handled_total,
// grpc_server_handling_seconds, …) and qgate's own:
//
//	qgate_sends_total{node,topic}               writes (one publish of a batch) a node acknowledged
//	qgate_send_errors_total{node,topic}         writes to a node that failed
//	qgate_send_retries_total{topic}             writes retried on another node
//	qgate_send_duration_seconds{topic}          Backend.Send latency as the service sees it (retries included)
//	qgate_failovers_total{group}                sends of a group moved to a lower-priority member
//	qgate_failbacks_total{group}                sends of a group moved back to a higher-priority member
//	qgate_node_state{node,group,state}          1 for the node's current state (unknown, up, down, draining), else 0
//	qgate_node_active{node,group}               1 while the node takes its group's sends
//	qgate_deliveries_total{topic,channel}       deliveries handed to subscribers (redeliveries included)
//	qgate_redeliveries_total{topic,channel}     deliveries with attempt > 1
//	qgate_acks_total{topic,channel}             acked deliveries
//	qgate_nacks_total{topic,channel}            nacked deliveries
//	qgate_dead_letters_total{topic,channel}     messages moved to a dead-letter topic
//	qgate_claims_yielded_total{topic,channel}   late copies that gave way to another instance's claim
//	qgate_in_flight{topic,channel}              deliveries handed out and not yet settled
//	qgate_node_out_total{node,reason}           a node went out of the send path; reason data_path (ejected
//	                                            for failed sends) or health_check (/ping failed)
//	qgate_node_ejections_capped_total{node}     data-path ejections refused by the max ejection share
//
// # Bounded labels
//
// Topic and channel names are labels, bounded so that a gateway with very
// many topics does not have as many series. A topic's series, and a topic
// and channel's, are removed by a Gather (scrape) once they went unused for
// the idle time (WithLabelIdle, default 10 min), counted from the first
// Gather after the last use; an open subscription pins its topic and
// channel. At most WithMaxLabelValues
// (default 1000) distinct topics, and separately as many topic/channel
// pairs, have series of their own; uses beyond are counted under
// OtherLabel ("#other") until idle ones make room.
//
// # Where the numbers come from
//
//   - Node state, active flags, failovers and failbacks: from the pool's
//     Watch stream (StartNodeWatch). A failover is a group's active member
//     changing to one of lower priority; a failback, to one of higher
//     priority. Needs no hook in the pool.
//   - Send latency, deliveries, redeliveries, acks, nacks and in-flight:
//     from Backend, a backends.Backend decorator the service is built on.
//     Needs no hook in the pool or the service.
//   - Per-node sends and send errors, retries and dead letters happen inside
//     the pool: it reports them through the PoolObserver methods (Metrics
//     implements them) if it is given a Metrics as its observer. So do
//     nodes going out and refused ejections (NodeOut, EjectionCapped).
package metrics
