import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Transports a subscriber can use: the only values of the `transport` label. */
export type Transport = "sse" | "ws";


/** Outcomes of client tokens: the only values of the `outcome` label. */
export type TokenOutcome =
  | "minted"
  | "accepted"
  | "invalid_client_socket"
  | "expired_client_socket"
  | "exhausted_client_socket";

/**
 * The node's Prometheus metrics, in a registry of its own (several nodes can live in one test
 * process). Labels are bounded: transport, reason, outcome, route; never a plate or channel name.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly connections = new Gauge({
    name: "plate_connections",
    help: "Open subscriber connections, by transport.",
    labelNames: ["transport"] as const,
    registers: [this.registry],
  });
  readonly subscriptions = new Gauge({
    name: "plate_broker_subscriptions",
    help: "Distinct channels and patterns this node is subscribed to in the broker.",
    registers: [this.registry],
  });
  readonly published = new Counter({
    name: "plate_messages_published_total",
    help: "Messages accepted by the broker from this node's publish route.",
    registers: [this.registry],
  });
  readonly delivered = new Counter({
    name: "plate_messages_delivered_total",
    help: "Messages written to subscribers of this node, by transport.",
    labelNames: ["transport"] as const,
    registers: [this.registry],
  });
  readonly drops = new Counter({
    name: "plate_connections_dropped_total",
    help: "Connections the server closed, by reason (an error code of the spec: slow_consumer, revoked, ...).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly tokens = new Counter({
    name: "plate_client_tokens_total",
    help: "Client tokens minted and connection attempts with them, by outcome.",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly brokerUp = new Gauge({
    name: "plate_broker_up",
    help: "1 while the broker is reachable, else 0.",
    registers: [this.registry],
  });
  readonly publishSeconds = new Histogram({
    name: "plate_publish_duration_seconds",
    help: "Time from a publish request's arrival to the broker accepting it.",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly deliverySeconds = new Histogram({
    name: "plate_delivery_latency_seconds",
    help: "Time from a message's acceptance (its timestamp) to its fan-out on this node.",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: "plate_requests_rejected_total",
    help: "Requests answered with an error, by error code.",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "plate_" });
  }
}
