import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { LeanHistogram } from "./lean-histogram.js";

/** Transports a subscriber can use: the only values of the `transport` label. */
export type Transport = "sse" | "ws";


/** Outcomes of client tokens: the only values of the `outcome` label. */
export type TokenOutcome =
  | "minted"
  | "rate_limited"
  | "quota_exceeded"
  | "accepted"
  | "invalid_client_socket"
  | "expired_client_socket"
  | "exhausted_client_socket";

/** The `plate` label of plates past `METRICS_PLATE_LABELS`: they are counted together. */
export const OTHER_PLATES = "_other";

/**
 * The node's Prometheus metrics, in a registry of its own (several nodes can live in one test
 * process). Labels are bounded: transport, reason, outcome, code; never a channel name. Plate ids
 * appear only in the `plate_plate_*` series, and only when `METRICS_PLATE_LABELS` > 0: the first
 * that many plates seen get a label each, every later one counts under `_other`.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly #plateLabels = new Set<string>();
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
  /**
   * Counted on every publish and every fan-out: added to plain numbers (`countPublished`,
   * `countDelivered`) and handed to prom-client when `/metrics` is read. Its `inc` validates and
   * hashes labels on every call: about 1.5% of W3's CPU for these two.
   */
  #published = 0;
  #deliveredSse = 0;
  #deliveredWs = 0;
  readonly published = new Counter({
    name: "plate_messages_published_total",
    help: "Messages accepted by the broker from this node's publish route.",
    registers: [this.registry],
    collect: () => {
      if (this.#published > 0) this.published.inc(this.#published);
      this.#published = 0;
    },
  });
  readonly delivered = new Counter({
    name: "plate_messages_delivered_total",
    help: "Messages written to subscribers of this node, by transport.",
    labelNames: ["transport"] as const,
    registers: [this.registry],
    collect: () => {
      if (this.#deliveredSse > 0) this.delivered.inc({ transport: "sse" }, this.#deliveredSse);
      if (this.#deliveredWs > 0) this.delivered.inc({ transport: "ws" }, this.#deliveredWs);
      this.#deliveredSse = 0;
      this.#deliveredWs = 0;
    },
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
  readonly subscriberNoDelay = new Gauge({
    name: "plate_subscriber_no_delay",
    help: "1 while subscriber sockets send each write at once (TCP_NODELAY), 0 while they run with Nagle's algorithm (SUBSCRIBER_NO_DELAY).",
    registers: [this.registry],
  });
  readonly brokerUp = new Gauge({
    name: "plate_broker_up",
    help: "1 while the broker is reachable, else 0.",
    registers: [this.registry],
  });
  readonly publishSeconds = new LeanHistogram({
    name: "plate_publish_duration_seconds",
    help: "Time from a publish request's arrival to the broker accepting it.",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly deliverySeconds = new LeanHistogram({
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

  readonly webhookEvents = new Counter({
    name: "plate_webhook_events_total",
    help: "Channel events for plates' webhooks, by outcome: delivered (a 2xx answer), dropped (queue full, webhook unreadable or deleted, or out of attempts).",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });

  readonly probeLost = new Counter({
    name: "plate_broker_probe_lost_total",
    help: "Silent-loss probes that did not come back through Redis in time (the subscriber connection was deaf and is reconnected).",
    registers: [this.registry],
  });
  readonly resets = new Counter({
    name: "plate_subscriber_resets_total",
    help: "Reset frames sent to subscribers (a resume that could not be complete), by reason.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly platePublished = new Counter({
    name: "plate_plate_messages_published_total",
    help: "Messages published, by plate (only with METRICS_PLATE_LABELS > 0; plates past it under _other).",
    labelNames: ["plate"] as const,
    registers: [this.registry],
  });
  readonly platePublishedBytes = new Counter({
    name: "plate_plate_published_bytes_total",
    help: "Bytes of messages published, by plate (only with METRICS_PLATE_LABELS > 0; plates past it under _other).",
    labelNames: ["plate"] as const,
    registers: [this.registry],
  });
  readonly plateDelivered = new Counter({
    name: "plate_plate_messages_delivered_total",
    help: "Messages delivered live to subscribers, by plate (only with METRICS_PLATE_LABELS > 0; plates past it under _other).",
    labelNames: ["plate"] as const,
    registers: [this.registry],
  });
  readonly plateTokensMinted = new Counter({
    name: "plate_plate_client_tokens_minted_total",
    help: "Client paths minted (route 4), by plate (only with METRICS_PLATE_LABELS > 0; plates past it under _other).",
    labelNames: ["plate"] as const,
    registers: [this.registry],
  });
  readonly plateConnections = new Gauge({
    name: "plate_plate_connections",
    help: "Open subscriber connections, by plate (only with METRICS_PLATE_LABELS > 0; plates past it under _other).",
    labelNames: ["plate"] as const,
    registers: [this.registry],
  });

  /** `plateLabels`: how many plates may have a label of their own (`METRICS_PLATE_LABELS`; 0 = none). */
  constructor(private readonly plateLabels = 0) {
    collectDefaultMetrics({ register: this.registry, prefix: "plate_" });
  }

  /** Counts messages published (`plate_messages_published_total`). */
  countPublished(n: number): void {
    this.#published += n;
  }

  /** Counts messages written to subscribers (`plate_messages_delivered_total`). */
  countDelivered(sse: number, ws: number): void {
    this.#deliveredSse += sse;
    this.#deliveredWs += ws;
  }

  /**
   * The `plate` label of `plateId`, or undefined when per-plate series are off. A plate's answer never
   * changes: the labelled plates are only ever added to, up to the limit.
   */
  plateLabel(plateId: string): string | undefined {
    if (this.plateLabels === 0) return undefined;
    if (this.#plateLabels.has(plateId)) return plateId;
    if (this.#plateLabels.size >= this.plateLabels) return OTHER_PLATES;
    this.#plateLabels.add(plateId);
    return plateId;
  }
}
