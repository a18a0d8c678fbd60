import { Usage } from "./core/usage.js";
import { ConnectionLeases } from "./core/connection-leases.js";
import { Filters } from "./core/filters.js";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { nanoid } from "nanoid";
import { MemoryBroker, RedisBroker } from "@plate/broker";
import type { Broker } from "@plate/broker";
import { directSend, unavailable as directSendUnavailable } from "@plate/direct-send";
import { PlateError } from "@plate/protocol";
import { MemoryStore, RedisStore } from "@plate/store";
import type { Store } from "@plate/store";
import { redisTarget } from "./config.js";
import type { Config } from "./config.js";
import { Connections } from "./core/connections.js";
import { Fanout } from "./core/fanout.js";
import { Publisher } from "./core/publisher.js";
import { Realtime } from "./core/realtime.js";
import { Rate, RateLimiter } from "./core/rate-limit.js";
import { PresenceHub } from "./core/presence.js";
import { Occupancy } from "./core/occupancy.js";
import { ChannelEvents, Webhooks } from "./core/webhooks.js";
import { Resync } from "./core/resync.js";
import { Subscriptions } from "./core/subscriptions.js";
import { Tenancy } from "./core/tenancy.js";
import { newMessageId } from "./core/ids.js";
import { SignedTokens } from "./core/signed-tokens.js";
import { Tokens } from "./core/tokens.js";
import { createRequestListener } from "./http/requests.js";
import { FastLane } from "./http/fast-lane.js";
import { createUpgradeHandler } from "./http/upgrade.js";
import { createLogger } from "./log.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";
import type { Services } from "./services.js";
import { SubscriberNoDelay } from "./transports/no-delay.js";

/** Length of a node's id: 10 url-safe characters (60 bits) keep nodes apart for good. */
const NODE_ID_CHARS = 10;
/** How often expired client tokens of the embedded store are swept, in ms. */
const TOKEN_SWEEP_MS = 60_000;
/** How often idle, full client-publish-rate buckets are forgotten, in ms. */
const RATE_SWEEP_MS = 60_000;
/**
 * Longest a gap fill waits for the node to be back in step with the store (`Resync`) before it
 * hands over what was missed, in ms: live messages of the topic are held that long at most.
 */
const RESYNC_FILL_WAIT_MS = 5000;
/**
 * How often Node looks for requests past `HTTP_HEADERS_TIMEOUT_MS` / `HTTP_REQUEST_TIMEOUT_MS`,
 * in ms (its default, 30 s, would let a stalled request outlive its timeout by as much). It walks
 * only the connections with a request in progress.
 */
const HTTP_TIMEOUT_CHECK_MS = 1000;

/** A running edge node. */
export interface EdgeNode {
  readonly server: Server;
  /** `http://host:port` it listens on. */
  readonly url: string;
  readonly services: Services;
  /** Stops taking connections, closes the open ones (1001 / stream end) and waits up to `DRAIN_TIMEOUT_MS`. */
  drain(): Promise<void>;
  /** Drains, then frees the broker and the store. */
  close(): Promise<void>;
}

/** What `startEdge` may be handed instead of building it from the config (tests, other topologies). */
export interface EdgeParts {
  readonly broker?: Broker;
  readonly store?: Store;
  readonly log?: Logger;
}

/**
 * Builds and starts an edge node: the composition root, the one place that picks implementations.
 * Without `REDIS_URL` it runs on the embedded in-memory broker and store (plates and keys kept in
 * `DATA_DIR`).
 */
export async function startEdge(config: Config, parts: EdgeParts = {}): Promise<EdgeNode> {
  const log = parts.log ?? createLogger(config.logLevel);
  const metrics = new Metrics(config.metricsPlateLabels);
  // Names this node in Redis (its probe channel) and in its client ids (route 9's POST finds it by them).
  const nodeId = nanoid(NODE_ID_CHARS);
  const { broker, store } = await openBackends(config, parts, log, metrics, nodeId);
  const retention = { count: config.historyCount, ageMs: config.historyAgeMs, markTtlMs: config.historyMarkTtlMs };
  const tenancy = new Tenancy(store, config.keyCacheMs, retention, {
    publishPerS: config.publishRatePerS,
    publishBurst: config.publishBurst,
    publishBytesPerS: config.publishBytesPerS,
    maxMessageBytes: config.maxMessageBytes,
    connections: config.maxConnectionsPerPlate,
    subscriptionsPerConnection: config.maxSubscriptionsPerConnection,
    presenceMembers: config.presenceMaxMembers,
    filters: config.filtersPerPlate,
    tokensPerS: config.clientTokenMintRatePerS,
    tokensBurst: config.clientTokenMintBurst,
    webhooksPerS: config.webhookRatePerS,
    webhooksBurst: config.webhookBurst,
    historyChannels: config.historyChannelsPerPlate,
    historyBytes: config.historyBytesPerPlate,
    tokenBytes: config.clientTokenBytesPerPlate,
  });
  const provision = () => bootstrapPlates(config, tenancy, log);
  const provisioned = await provisionAtStart(provision, log);

  const usage = new Usage(store, nodeId, { flushMs: config.usageFlushMs, keepDays: config.usageKeepDays }, log, metrics);
  const connections: Connections = new Connections(metrics, config.maxConnectionsPerPlate, usage, {
    count: (plateId) => leases.others(plateId),
    learn: (plateId) => leases.learn(plateId),
  });
  const leases = new ConnectionLeases(store, nodeId, connections, { reportMs: config.connectionReportMs, leaseMs: config.connectionLeaseMs }, log);
  // A failed pass is tried again after the longest reconnect wait: by then the store has tried to reconnect.
  const resync = new Resync({ tenancy, connections, provision, log, retryMs: config.redisReconnectMaxMs });
  if (!provisioned) resync.run();
  const webhooks = new Webhooks(
    store,
    {
      batchMs: config.webhookBatchMs,
      batchMax: config.webhookBatchMax,
      timeoutMs: config.webhookTimeoutMs,
      retryFirstMs: config.webhookRetryFirstMs,
      retryMaxMs: config.webhookRetryMaxMs,
      maxAttempts: config.webhookMaxAttempts,
      maxQueued: config.webhookMaxQueued,
      cacheMs: config.keyCacheMs,
      rateOf: async (plateId) => {
        const limits = await tenancy.limitsOf(plateId);
        return { perS: limits.webhooksPerS, burst: limits.webhooksBurst };
      },
    },
    metrics,
    log,
  );
  const filters = new Filters({ maxBytes: config.filterMaxBytes, maxConditions: config.filterMaxConditions, perPlate: config.filtersPerPlate });
  const fanout = new Fanout(
    broker,
    metrics,
    log,
    retention,
    () => {
      // A gap in delivery may hide a revocation too: closed first, they get nothing published after it.
      resync.run();
      return resync.whenInStep(RESYNC_FILL_WAIT_MS);
    },
    new ChannelEvents(broker, webhooks, log),
    filters,
    usage,
  );
  const subscriptions = new Subscriptions(connections, fanout, broker, retention, metrics, log, filters, (plateId) => tenancy.limitsOf(plateId), config.headReuseMs);
  const signedTokens = new SignedTokens(store, config.signedTokenClockSkewS);
  const publisher = new Publisher(broker, (plateId) => tenancy.settingsOf(plateId), metrics, config.idempotencyWindowMs, config.volatileMaxBytes, usage);
  const clientPublishRate = new RateLimiter(config.clientPublishPlateRatePerS, config.clientPublishPlateBurst, "publishes from this plate's connections");
  const presence = new PresenceHub(
    broker,
    {
      maxMembers: config.presenceMaxMembers,
      maxStateBytes: config.presenceMaxStateBytes,
      membersOf: async (plateId) => (await tenancy.limitsOf(plateId)).presenceMembers,
    },
    log,
    webhooks,
  );
  const realtime = new Realtime(
    subscriptions,
    broker,
    nodeId,
    {
      maxPendingRequests: config.realtimeMaxPendingRequests,
      changeTimeoutMs: config.realtimeChangeTimeoutMs,
    },
    log,
    signedTokens,
    {
      publisher,
      perConnection: new Rate(config.clientPublishRatePerS, config.clientPublishBurst, "publishes from this connection"),
      perPlate: clientPublishRate,
    },
    presence,
  );
  await realtime.listen();
  const occupancy = new Occupancy(broker, connections, nodeId, config.realtimeChangeTimeoutMs, log);
  await occupancy.listen();
  webhooks.start();
  usage.start();
  leases.start();
  let draining = false;
  const subscriberNoDelay = new SubscriberNoDelay(config.subscriberNoDelay, config.subscriberNagleLoadPercent / 100, (noDelay, load) => {
    metrics.subscriberNoDelay.set(noDelay ? 1 : 0);
    log.info(noDelay ? "subscriber sockets send at once again" : "subscriber sockets hold small writes for the ACK (Nagle)", {
      eventLoopBusyPercent: Math.round(load * 100),
    });
  });
  metrics.subscriberNoDelay.set(subscriberNoDelay.noDelay ? 1 : 0);
  if (config.subscriberDirectSend && directSend === undefined) {
    log.warn("SUBSCRIBER_DIRECT_SEND is on but its addon is unavailable: subscribers are written through Node streams", { reason: directSendUnavailable });
  }
  const services: Services = {
    config,
    log,
    metrics,
    broker,
    tenancy,
    tokens: new Tokens(store, { maxDurationMs: config.clientTokenMaxDurationMs, maxUses: config.clientTokenMaxUses }, metrics, usage),
    signedTokens,
    publisher,
    connections,
    subscriptions,
    realtime,
    presence,
    occupancy,
    webhooks,
    filters,
    usage,
    subscriberNoDelay,
    directSend: config.subscriberDirectSend ? directSend : undefined,
    draining: () => draining,
    notReady: () =>
      draining
        ? "This node is draining."
        : !broker.isReady()
          ? "The broker (Redis pub/sub) is unreachable, or its subscriber connection is deaf."
          : !store.isReady()
            ? "The store (Redis) is unreachable, or its revocation channel is deaf."
            : !resync.inStep()
              ? "The node is checking keys and BOOTSTRAP_PLATES against the store after its Redis link came back."
              : undefined,
  };

  const stopRevocations = store.onRevoked((revocation) => {
    tenancy.forget(revocation);
    const closed = connections.revoke(revocation);
    log.info("revoked", { plateId: revocation.plateId, keyId: revocation.keyId, closed });
  });
  // Revocations may have gone unheard while the store's subscriber was cut or deaf.
  const stopResyncs = store.onResync(() => resync.run());
  metrics.brokerUp.set(broker.isReady() ? 1 : 0);
  const stopBrokerWatch = broker.onReadyChange((ready) => {
    metrics.brokerUp.set(ready ? 1 : 0);
    // A Redis that came back empty (restarted without persistence) lost the plates: provision again.
    if (ready) resync.run();
    log[ready ? "info" : "warn"](ready ? "broker reachable" : "broker unreachable");
  });
  const heartbeat = setInterval(() => connections.heartbeat(), config.heartbeatMs);
  const sweep = setInterval(() => clientPublishRate.sweep(), RATE_SWEEP_MS);
  sweep.unref();

  // The timeouts end requests whose headers or body stall; they end when the request has been
  // read, so SSE streams (taken over after their GET) and WebSockets (upgraded) outlive them.
  const server = createServer(
    {
      requestTimeout: config.httpRequestTimeoutMs,
      // Node refuses a headers timeout longer than the request timeout.
      headersTimeout: Math.min(config.httpHeadersTimeoutMs, config.httpRequestTimeoutMs),
      connectionsCheckingInterval: HTTP_TIMEOUT_CHECK_MS,
    },
    createRequestListener(services),
  );
  server.keepAliveTimeout = config.httpKeepAliveTimeoutMs;
  // Node 24.6 and later keep their own idle connections open this much past the announced timeout;
  // earlier versions close them at it. The fast lane applies it itself (FastLane.writeAnswer).
  if ("keepAliveTimeoutBuffer" in server) Object.assign(server, { keepAliveTimeoutBuffer: config.httpKeepAliveGraceMs });
  server.on("upgrade", createUpgradeHandler(services));
  const fastLane = new FastLane(services, server);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${host === "0.0.0.0" || host === "[::]" ? "127.0.0.1" : host}:${address.port}`;

  let drained: Promise<void> | undefined;
  const drain = () =>
    (drained ??= (async () => {
      draining = true;
      clearInterval(heartbeat);
      const closedServer = new Promise<void>((resolve) => server.close(() => resolve()));
      connections.endAll("shutting_down");
      // A connection accepted in the same poll phase as the signal has not been read yet: Node
      // reads it in the next one. What it already sent (a load balancer's readiness probe) is
      // read first, so it is answered (503 shutting_down) rather than cut as idle; a CI run of
      // main.test.ts (SIGTERM) once got the probe closed unanswered.
      await afterNextPoll();
      server.closeIdleConnections();
      fastLane.closeIdle();
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, config.drainTimeoutMs).unref());
      await Promise.race([closedServer, deadline]);
      server.closeAllConnections();
      fastLane.closeAll();
    })());

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      await drain();
      clearInterval(sweep);
      subscriberNoDelay.close();
      resync.stop();
      stopRevocations();
      stopResyncs();
      stopBrokerWatch();
      await realtime.close().catch(() => undefined);
      await occupancy.close().catch(() => undefined);
      webhooks.close();
      await usage.close().catch(() => undefined);
      await leases.close().catch(() => undefined);
      await broker.close();
      await store.close();
    })());

  return { server, url, services, drain, close };
}

/**
 * The broker and store the config asks for: the embedded ones without a Redis (`REDIS_URL`,
 * `REDIS_CLUSTER_NODES` or `REDIS_SENTINELS`), Redis ones with
 * it. A Redis that is unreachable does not stop the start: the node listens, reports not ready,
 * and becomes ready when Redis answers.
 */
async function openBackends(
  config: Config,
  parts: EdgeParts,
  log: Logger,
  metrics: Metrics,
  nodeId: string,
): Promise<{ broker: Broker; store: Store }> {
  const target = redisTarget(config);
  if (target === undefined) {
    return {
      broker: parts.broker ?? new MemoryBroker(),
      store:
        parts.store ??
        (await MemoryStore.open({ dataDir: config.dataDir, tokenTombstoneMs: config.tokenTombstoneMs, tokenSweepMs: TOKEN_SWEEP_MS })),
    };
  }
  const redis = {
    target,
    keyPrefix: config.redisKeyPrefix,
    commandTimeoutMs: config.redisCommandTimeoutMs,
    clusterRefreshMs: config.redisClusterRefreshMs,
  };
  return {
    broker:
      parts.broker ??
      new RedisBroker({
        ...redis,
        reconnectMaxMs: config.redisReconnectMaxMs,
        probeIntervalMs: config.redisProbeIntervalMs,
        probeTimeoutMs: config.redisProbeTimeoutMs,
        pubsubBatches: config.redisPubsubBatches,
        nodeId,
        newMessageId,
        warn: (message, fields) => log.warn(message, fields),
        onProbeLost: () => metrics.probeLost.inc(),
        presence: { leaseMs: config.presenceLeaseMs, sweepMs: config.presenceSweepMs },
      }),
    store:
      parts.store ??
      (await RedisStore.open({
        ...redis,
        reconnectMaxMs: config.redisReconnectMaxMs,
        tokenTombstoneMs: config.tokenTombstoneMs,
        probeIntervalMs: config.redisProbeIntervalMs,
        probeTimeoutMs: config.redisProbeTimeoutMs,
        warn: (message, fields) => log.warn(message, fields),
      })),
  };
}

/** Provisions `BOOTSTRAP_PLATES` (idempotent); rejects as the store does. */
async function bootstrapPlates(config: Config, tenancy: Tenancy, log: Logger): Promise<void> {
  for (const [plateId, secret] of config.bootstrapPlates) {
    if (await tenancy.ensurePlateWithKey(plateId, secret)) log.info("bootstrapped plate", { plateId });
  }
}

/**
 * Provisions `BOOTSTRAP_PLATES` at start. A bad entry (a secret that is another plate's key) stops
 * the start; an unreachable Redis does not: answers false, and the node's `Resync` retries until it
 * has succeeded (the node is not ready until then). Nodes provision them again each time Redis
 * comes back, as it may have come back empty.
 */
async function provisionAtStart(provision: () => Promise<void>, log: Logger): Promise<boolean> {
  try {
    await provision();
    return true;
  } catch (err) {
    if (!isUnavailable(err)) throw err;
    log.warn("Redis unreachable at start: not ready until BOOTSTRAP_PLATES is provisioned");
    return false;
  }
}

function isUnavailable(err: unknown): boolean {
  return err instanceof PlateError && err.code === "broker_unavailable";
}

/** Resolves once the event loop has been through its next poll phase (two check phases on). */
function afterNextPoll(): Promise<void> {
  return new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
}
