import { isPlateId } from "@plate/protocol";
import type { PlateId } from "@plate/protocol";
import { parseHostPorts } from "@plate/redis";
import type { HostPort, RedisTarget } from "@plate/redis";
import type { NoDelayMode } from "./transports/no-delay.js";

/**
 * Every setting of an edge node, read from environment variables. Each has a unit in its name, a
 * default and a line of documentation; `loadConfig` validates them all at start, and a bad value
 * stops the process with a message naming the variable. The README's settings table lists them
 * (a test keeps the two in step).
 */
export interface Config {
  readonly port: number;
  readonly host: string;
  readonly redisUrl: string | undefined;
  readonly redisClusterNodes: readonly HostPort[] | undefined;
  readonly redisClusterRefreshMs: number;
  readonly redisSentinels: readonly HostPort[] | undefined;
  readonly redisSentinelMaster: string;
  readonly redisKeyPrefix: string;
  readonly redisCommandTimeoutMs: number;
  readonly redisReconnectMaxMs: number;
  readonly redisProbeIntervalMs: number;
  readonly redisProbeTimeoutMs: number;
  readonly redisPubsubBatches: boolean;
  readonly adminToken: string | undefined;
  readonly dataDir: string;
  readonly maxMessageBytes: number;
  readonly maxBatchBytes: number;
  readonly httpRequestTimeoutMs: number;
  readonly httpHeadersTimeoutMs: number;
  readonly httpKeepAliveTimeoutMs: number;
  readonly httpKeepAliveGraceMs: number;
  readonly heartbeatMs: number;
  readonly sseRetryMs: number;
  readonly wsAuthTimeoutMs: number;
  readonly wsMaxClientFrameBytes: number;
  readonly wsMaxBadFrames: number;
  readonly maxSubscriptionsPerConnection: number;
  readonly maxOverlapChannels: number;
  readonly realtimeMaxPendingRequests: number;
  readonly realtimeChangeTimeoutMs: number;
  readonly slowConsumerMaxBytes: number;
  readonly slowConsumerGraceMs: number;
  readonly subscriberNoDelay: NoDelayMode;
  readonly subscriberDirectSend: boolean;
  readonly subscriberNagleLoadPercent: number;
  readonly corsOrigins: "*" | readonly string[];
  readonly bootstrapPlates: ReadonlyMap<PlateId, string>;
  readonly publishRatePerS: number;
  readonly publishBurst: number;
  readonly publishBytesPerS: number;
  readonly clientPublishRatePerS: number;
  readonly clientPublishBurst: number;
  readonly clientPublishPlateRatePerS: number;
  readonly clientPublishPlateBurst: number;
  readonly presenceMaxMembers: number;
  readonly presenceMaxStateBytes: number;
  readonly filterMaxBytes: number;
  readonly filterMaxConditions: number;
  readonly filtersPerPlate: number;
  readonly historyChannelsPerPlate: number;
  readonly clientTokenBytesPerPlate: number;
  readonly connectionReportMs: number;
  readonly connectionLeaseMs: number;
  readonly historyBytesPerPlate: number;
  readonly volatileMaxBytes: number;
  readonly usageFlushMs: number;
  readonly clientTokenMintRatePerS: number;
  readonly clientTokenMintBurst: number;
  readonly webhookRatePerS: number;
  readonly webhookBurst: number;
  readonly usageKeepDays: number;
  readonly presenceLeaseMs: number;
  readonly presenceSweepMs: number;
  readonly webhookBatchMs: number;
  readonly webhookBatchMax: number;
  readonly webhookTimeoutMs: number;
  readonly webhookRetryFirstMs: number;
  readonly webhookRetryMaxMs: number;
  readonly webhookMaxAttempts: number;
  readonly webhookMaxQueued: number;
  readonly maxConnectionsPerPlate: number;
  readonly maxPendingConnections: number;
  readonly maxPendingConnectionsPerAddress: number;
  readonly clientTokenMaxDurationMs: number;
  readonly clientTokenMaxUses: number;
  readonly tokenTombstoneMs: number;
  readonly signedTokenClockSkewS: number;
  readonly keyCacheMs: number;
  readonly historyCount: number;
  readonly historyAgeMs: number;
  readonly headReuseMs: number;
  readonly historyMarkTtlMs: number;
  readonly idempotencyWindowMs: number;
  readonly drainTimeoutMs: number;
  readonly demoPlate: boolean;
  readonly consoleEnabled: boolean;
  readonly logLevel: LogLevel;
  readonly metricsPlateLabels: number;
}

/** Levels of the JSON log, least to most severe. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A setting that cannot be used: names the variable and says what it accepts. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
  }
}

interface Setting<K extends keyof Config> {
  readonly key: K;
  readonly default: string | undefined;
  readonly doc: string;
  readonly parse: (raw: string, variable: string) => Config[K];
}

/** Bootstrap secrets shorter than this are refused (spec: "shorter than 24 characters"). */
export const BOOTSTRAP_SECRET_MIN_CHARS = 24;

function integer(min: number, max: number) {
  return (raw: string, variable: string): number => {
    const value = Number(raw.trim());
    if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new ConfigError(variable, `expected a whole number from ${min} to ${max}, got "${raw}".`);
    }
    return value;
  };
}

function text(raw: string): string {
  return raw;
}

/** Longest `REDIS_KEY_PREFIX`, in characters. */
const REDIS_KEY_PREFIX_MAX_CHARS = 64;

function keyPrefix(raw: string, variable: string): string {
  if (raw.length > REDIS_KEY_PREFIX_MAX_CHARS || /[\s{}]/.test(raw)) {
    throw new ConfigError(variable, `expected up to ${REDIS_KEY_PREFIX_MAX_CHARS} characters without spaces or braces, got "${raw}".`);
  }
  return raw;
}

function nonEmptyText(raw: string, variable: string): string {
  if (raw.trim() === "") throw new ConfigError(variable, "expected a name.");
  return raw.trim();
}

function hostPorts(raw: string, variable: string): readonly HostPort[] {
  try {
    return parseHostPorts(raw);
  } catch (err) {
    throw new ConfigError(variable, `expected host:port[,host:port...]: ${(err as Error).message}.`);
  }
}

function optionalText(raw: string): string | undefined {
  return raw === "" ? undefined : raw;
}

function boolean(raw: string, variable: string): boolean {
  const value = raw.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(value)) return true;
  if (["0", "false", "no", "off"].includes(value)) return false;
  throw new ConfigError(variable, `expected true or false, got "${raw}".`);
}

function noDelayMode(raw: string, variable: string): NoDelayMode {
  if (raw.trim().toLowerCase() === "auto") return "auto";
  try {
    return boolean(raw, variable);
  } catch {
    throw new ConfigError(variable, `expected true, false or auto, got "${raw}".`);
  }
}

function origins(raw: string, variable: string): "*" | readonly string[] {
  const value = raw.trim();
  if (value === "*") return "*";
  const list = value.split(",").map((origin) => origin.trim()).filter((origin) => origin !== "");
  for (const origin of list) {
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      throw new ConfigError(variable, `"${origin}" is not an origin like https://app.example.com.`);
    }
    if (parsed.origin !== origin) {
      throw new ConfigError(variable, `"${origin}" is not an origin; did you mean "${parsed.origin}"?`);
    }
  }
  return list;
}

function bootstrap(raw: string, variable: string): ReadonlyMap<PlateId, string> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new ConfigError(variable, 'expected JSON like {"myplate":"<secret of 24+ characters>"}.');
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(variable, 'expected a JSON object like {"myplate":"<secret>"}.');
  }
  const plates = new Map<PlateId, string>();
  for (const [plateId, secret] of Object.entries(value)) {
    if (!isPlateId(plateId)) {
      throw new ConfigError(variable, `"${plateId}" is not a plate id (A-Z, a-z, 0-9, _ and -, 1 to 64).`);
    }
    if (typeof secret !== "string" || secret.length < BOOTSTRAP_SECRET_MIN_CHARS || /\s/.test(secret)) {
      throw new ConfigError(
        variable,
        `the secret of plate "${plateId}" must be a string of at least ${BOOTSTRAP_SECRET_MIN_CHARS} characters without spaces.`,
      );
    }
    plates.set(plateId, secret);
  }
  return plates;
}

function logLevel(raw: string, variable: string): LogLevel {
  const value = raw.trim().toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(value)) return value as LogLevel;
  throw new ConfigError(variable, `expected one of ${LOG_LEVELS.join(", ")}, got "${raw}".`);
}

const DAY_MS = 86_400_000;

/** The settings table: environment variable → setting. The README lists the same rows. */
export const SETTINGS = {
  PORT: { key: "port", default: "8080", doc: "TCP port to listen on.", parse: integer(0, 65535) },
  HOST: { key: "host", default: "0.0.0.0", doc: "Address to listen on.", parse: text },
  REDIS_URL: {
    key: "redisUrl",
    default: undefined,
    doc: "Redis to share with other nodes. Unset (and no cluster or sentinels): one node on the embedded in-memory broker and store. With `REDIS_CLUSTER_NODES` or `REDIS_SENTINELS` it gives only what every connection shares: user, password, `rediss:` for TLS (and, with Sentinel, the database).",
    parse: optionalText,
  },
  REDIS_CLUSTER_NODES: {
    key: "redisClusterNodes",
    default: undefined,
    doc: "A Redis Cluster (7+) to share, as a seed list `host:port,host:port` (any of its servers; the rest is discovered). Every key and channel of a plate is in one hash slot; messages go through sharded pub/sub. See docs/redis.md.",
    parse: hostPorts,
  },
  REDIS_CLUSTER_REFRESH_MS: {
    key: "redisClusterRefreshMs",
    default: "5000",
    doc: "On a cluster, how often the slot map is read again even when nothing failed; bounds how long a slot moved by hand goes unnoticed by subscribers (its messages are then filled from history).",
    parse: integer(100, 600_000),
  },
  REDIS_SENTINELS: {
    key: "redisSentinels",
    default: undefined,
    doc: "Redis Sentinels watching the primary to share, `host:port,host:port`; each connection asks them where the primary is, again after every reconnect (so a failover is followed).",
    parse: hostPorts,
  },
  REDIS_SENTINEL_MASTER: {
    key: "redisSentinelMaster",
    default: "mymaster",
    doc: "The name under which the sentinels of `REDIS_SENTINELS` know the primary.",
    parse: nonEmptyText,
  },
  REDIS_KEY_PREFIX: {
    key: "redisKeyPrefix",
    default: "plate:",
    doc: "Put before every Redis key and channel name, so several deployments can share one Redis. A channel `c` of plate `p` is the Redis channel `<prefix>p:c`.",
    parse: keyPrefix,
  },
  REDIS_COMMAND_TIMEOUT_MS: {
    key: "redisCommandTimeoutMs",
    default: "2000",
    doc: "How long one Redis command may take before the request it serves fails with 503 `broker_unavailable`.",
    parse: integer(10, 60_000),
  },
  REDIS_RECONNECT_MAX_MS: {
    key: "redisReconnectMaxMs",
    default: "500",
    doc: "Longest wait between two attempts to reconnect to Redis (the first is 50 ms, then doubling); bounds how soon subscriptions receive again after Redis returns.",
    parse: integer(50, 60_000),
  },
  REDIS_PROBE_INTERVAL_MS: {
    key: "redisProbeIntervalMs",
    default: "5000",
    doc: "How often a node sends itself probes through Redis (the broker's while it has subscriptions, the store's always), to notice a subscriber connection that is up but deaf.",
    parse: integer(50, 600_000),
  },
  REDIS_PUBSUB_BATCHES: {
    key: "redisPubsubBatches",
    default: "true",
    doc: "Publish a run of messages to one channel that one Redis script carries (what one turn of the event loop publishes to a plate) as one pub/sub message instead of one per message, and keep it in the channel's history as one entry instead of one per message: less CPU for Redis and for every node that hears the channel. Every node reads both forms; a node of a version before 2026-12-03 reads a batch as a plain string, and one before 2026-12-05 neither reads nor trims a run kept as one entry, so set `false` while such nodes still run (a rolling upgrade), then back to `true`.",
    parse: boolean,
  },
  REDIS_PROBE_TIMEOUT_MS: {
    key: "redisProbeTimeoutMs",
    default: "3000",
    doc: "How long a probe may take to come back; then the node reports not ready, reconnects that subscriber connection and resubscribes (and, for the store's, re-checks its open connections' keys).",
    parse: integer(10, 600_000),
  },
  ADMIN_TOKEN: {
    key: "adminToken",
    default: undefined,
    doc: "Bearer token of the admin routes (`/admin/...`). Unset: they answer 404.",
    parse: optionalText,
  },
  DATA_DIR: {
    key: "dataDir",
    default: "./data",
    doc: "Folder where the embedded default keeps plates and keys (`plates.json`).",
    parse: text,
  },
  MAX_MESSAGE_BYTES: {
    key: "maxMessageBytes",
    default: "65536",
    doc: "Largest publish request body, in bytes; larger answers 413 `payload_too_large`.",
    parse: integer(2, 16 * 1024 * 1024),
  },
  MAX_BATCH_BYTES: {
    key: "maxBatchBytes",
    default: "1048576",
    doc: "Largest batch publish request body (`POST /{plateId}/publish`), in bytes; larger answers 413 `payload_too_large`. Each message in it is also held to `MAX_MESSAGE_BYTES`.",
    parse: integer(2, 64 * 1024 * 1024),
  },
  HTTP_REQUEST_TIMEOUT_MS: {
    key: "httpRequestTimeoutMs",
    default: "30000",
    doc: "How long a client may take to send a whole request, headers and body, in ms; then the node answers 408 and closes the connection. SSE streams and WebSockets are not cut: it ends when the request has been read.",
    parse: integer(100, 3_600_000),
  },
  HTTP_HEADERS_TIMEOUT_MS: {
    key: "httpHeadersTimeoutMs",
    default: "10000",
    doc: "How long a client may take to send a request's headers, in ms (at most `HTTP_REQUEST_TIMEOUT_MS`; a longer value is cut to it); then 408 and close.",
    parse: integer(100, 3_600_000),
  },
  HTTP_KEEP_ALIVE_TIMEOUT_MS: {
    key: "httpKeepAliveTimeoutMs",
    default: "5000",
    doc: "How long a keep-alive connection may stay idle after an answer, as announced to clients (`Keep-Alive: timeout=`, whole seconds), in ms; 0 keeps idle connections open. The node closes it `HTTP_KEEP_ALIVE_GRACE_MS` later.",
    parse: integer(0, 3_600_000),
  },
  HTTP_KEEP_ALIVE_GRACE_MS: {
    key: "httpKeepAliveGraceMs",
    default: "1000",
    doc: "How much longer than the announced `HTTP_KEEP_ALIVE_TIMEOUT_MS` an idle connection stays open, in ms: a request sent as the announced time runs out is answered, not reset unread. Publishes get it on every Node; other requests from Node 24.6 (Node's `keepAliveTimeoutBuffer`).",
    parse: integer(0, 60_000),
  },
  HEARTBEAT_MS: {
    key: "heartbeatMs",
    default: "25000",
    doc: "Interval of SSE `: ping` comments and WebSocket protocol pings; a WebSocket that misses one pong is dropped.",
    parse: integer(100, 300_000),
  },
  SSE_RETRY_MS: {
    key: "sseRetryMs",
    default: "2000",
    doc: "Reconnect delay sent to SSE clients in the `retry:` line.",
    parse: integer(0, 600_000),
  },
  WS_AUTH_TIMEOUT_MS: {
    key: "wsAuthTimeoutMs",
    default: "10000",
    doc: "How long a WebSocket without an Authorization header has to send its `{\"auth\":...}` frame; then 4401.",
    parse: integer(100, 600_000),
  },
  WS_MAX_CLIENT_FRAME_BYTES: {
    key: "wsMaxClientFrameBytes",
    default: "16384",
    doc: "Largest frame a WebSocket client may send: it bounds a message a client publishes from its connection (a `publish` frame, route 12) and a signed client token in an auth frame; larger gets a `payload_too_large` error frame and closes with 1009.",
    parse: integer(64, 1024 * 1024),
  },
  WS_MAX_BAD_FRAMES: {
    key: "wsMaxBadFrames",
    default: "10",
    doc: 'Unexpected frames (anything but `{"type":"ping"}` after auth) a WebSocket client may send: each gets a `bad_request` error frame, and the one that reaches this number also closes the socket with 4400.',
    parse: integer(1, 1_000_000),
  },
  MAX_SUBSCRIPTIONS_PER_CONNECTION: {
    key: "maxSubscriptionsPerConnection",
    default: "200",
    doc: "Subscriptions one realtime connection (route 9, or a several-channel client path) may hold at once; past it a `subscribe` gets a `bad_request` error (the connection stays open), and a connect asking for more is refused with 400.",
    parse: integer(1, 100_000),
  },
  MAX_OVERLAP_CHANNELS: {
    key: "maxOverlapChannels",
    default: "1024",
    doc: "Channels per connection whose last id is remembered to deliver a message once when several of the connection's subscriptions match it (a channel and a pattern, two patterns); the least recent is forgotten past it (docs/delivery.md).",
    parse: integer(1, 1_000_000),
  },
  REALTIME_MAX_PENDING_REQUESTS: {
    key: "realtimeMaxPendingRequests",
    default: "64",
    doc: "Requests (subscribe, unsubscribe, publish, refresh, route 9 POST changes) one realtime connection may have waiting to be carried out, in order; past it a request gets a `rate_limited` error frame / 429.",
    parse: integer(1, 100_000),
  },
  REALTIME_CHANGE_TIMEOUT_MS: {
    key: "realtimeChangeTimeoutMs",
    default: "5000",
    doc: "How long route 9's POST waits for the node holding the stream to carry out the change; then 503 `broker_unavailable` (the change may still happen).",
    parse: integer(100, 600_000),
  },
  PRESENCE_MAX_MEMBERS: {
    key: "presenceMaxMembers",
    default: "1000",
    doc: "Presence members one channel may have (route 10, `presence.track`); one more is refused with an error frame `quota_exceeded`.",
    parse: integer(1, 1_000_000),
  },
  PRESENCE_MAX_STATE_BYTES: {
    key: "presenceMaxStateBytes",
    default: "4096",
    doc: "Largest presence state one member may track, in bytes of JSON; larger is refused with `payload_too_large`.",
    parse: integer(2, 1024 * 1024),
  },
  FILTER_MAX_BYTES: {
    key: "filterMaxBytes",
    default: "4096",
    doc: "Largest subscription filter (route 13), in bytes of JSON; larger is refused with `payload_too_large`.",
    parse: integer(2, 1024 * 1024),
  },
  FILTER_MAX_CONDITIONS: {
    key: "filterMaxConditions",
    default: "50",
    doc: "Most conditions a filter may hold once normalized (Koncorde's `maxConditions`), and most alternatives its and/or/not may expand to; more is refused with `invalid_filter`.",
    parse: integer(1, 10_000),
  },
  FILTERS_PER_PLATE: {
    key: "filtersPerPlate",
    default: "10000",
    doc: "Filtered subscriptions one plate may hold on one node; one more is refused with `quota_exceeded`.",
    parse: integer(1, 10_000_000),
  },
  HISTORY_CHANNELS_PER_PLATE: {
    key: "historyChannelsPerPlate",
    default: "10000",
    doc: "Channels of one plate that may hold history (retained messages) at once, over every node; a publish that would start one more is refused with 403 `quota_exceeded` until a quiet channel's history expires (`HISTORY_AGE_MS` after its last publish). 0 = no limit.",
    parse: integer(0, 100_000_000),
  },
  HISTORY_BYTES_PER_PLATE: {
    key: "historyBytesPerPlate",
    default: "67108864",
    doc: "Bytes one plate's history may hold at once, over every node (an estimate of Redis memory: each message's payload and 32 bytes, 4,608 a channel with messages, 256 a channel whose marks are kept; the embedded broker counts alike). A publish that would grow it past this is refused with 403 `quota_exceeded`; one that replaces older messages with no more bytes passes. 0 = no limit.",
    parse: integer(0, 1_000_000_000_000),
  },
  VOLATILE_MAX_BYTES: {
    key: "volatileMaxBytes",
    default: "2048",
    doc: "Largest `volatile` metadata a publish may carry (route 13), in bytes of JSON; larger is refused with `payload_too_large`.",
    parse: integer(2, 1024 * 1024),
  },
  CLIENT_TOKEN_MINT_RATE_PER_S: {
    key: "clientTokenMintRatePerS",
    default: "100",
    doc: "Client paths (route 4) one plate may mint per second, over every node (a token bucket in the store); over it, 429 `rate_limited` with `Retry-After`. 0 = unlimited. A plate's own limit (`tokensPerS`) replaces it.",
    parse: integer(0, 100_000_000),
  },
  CLIENT_TOKEN_MINT_BURST: {
    key: "clientTokenMintBurst",
    default: "200",
    doc: "Size of that bucket: client paths a plate may mint at once after being idle.",
    parse: integer(1, 100_000_000),
  },
  CLIENT_TOKEN_BYTES_PER_PLATE: {
    key: "clientTokenBytesPerPlate",
    default: "67108864",
    doc: "Bytes of client paths (route 4) one plate may keep in the store at once, each counted from its minting until it is forgotten (`ttl` and `TOKEN_TOMBSTONE_MS` after): its record's JSON and 256 bytes. A mint past it is refused with 403 `quota_exceeded`. A plate that mints steadily needs about mints a second × (ttl + tombstone) × ~550 bytes. 0 = no limit.",
    parse: integer(0, 1_000_000_000_000),
  },
  WEBHOOK_RATE_PER_S: {
    key: "webhookRatePerS",
    default: "20",
    doc: "Webhook POSTs one plate's receiver may get per second, over every node (a token bucket in the store); past it the plate's events wait in its queue (up to `WEBHOOK_MAX_QUEUED`) and go in later, larger batches. 0 = unlimited. A plate's own limit (`webhooksPerS`) replaces it.",
    parse: integer(0, 1_000_000),
  },
  WEBHOOK_BURST: {
    key: "webhookBurst",
    default: "40",
    doc: "Size of that bucket: POSTs a plate's receiver may get at once after a quiet time.",
    parse: integer(1, 1_000_000),
  },
  USAGE_FLUSH_MS: {
    key: "usageFlushMs",
    default: "10000",
    doc: "How often a node adds what each plate used (messages and bytes published, messages delivered, tokens minted, peak connections) to the store; a node killed between two loses at most this much of its counts.",
    parse: integer(50, 3_600_000),
  },
  USAGE_KEEP_DAYS: {
    key: "usageKeepDays",
    default: "35",
    doc: "How long each hour's usage figures are kept, in days (`GET /admin/plates/{id}/usage`).",
    parse: integer(1, 3660),
  },
  PRESENCE_LEASE_MS: {
    key: "presenceLeaseMs",
    default: "15000",
    doc: "On Redis: a node renews its presence lease every third of this; once a node has not renewed it for this long (it died), the other nodes remove its members.",
    parse: integer(300, 3_600_000),
  },
  PRESENCE_SWEEP_MS: {
    key: "presenceSweepMs",
    default: "5000",
    doc: "On Redis: how often a node using presence looks for expired leases. A dead node's members are gone within about `PRESENCE_LEASE_MS` + `PRESENCE_SWEEP_MS` + a third of the lease (25 s by default).",
    parse: integer(50, 3_600_000),
  },
  WEBHOOK_BATCH_MS: {
    key: "webhookBatchMs",
    default: "500",
    doc: "How often a node polls the plates' webhook queues (route 10), in ms: a plate's events gather meanwhile and go in one POST.",
    parse: integer(0, 60_000),
  },
  WEBHOOK_BATCH_MAX: {
    key: "webhookBatchMax",
    default: "100",
    doc: "Events in one webhook POST at most.",
    parse: integer(1, 10_000),
  },
  WEBHOOK_TIMEOUT_MS: {
    key: "webhookTimeoutMs",
    default: "5000",
    doc: "How long a webhook receiver has to answer a POST, in ms; then it counts as failed and is retried.",
    parse: integer(100, 120_000),
  },
  WEBHOOK_RETRY_FIRST_MS: {
    key: "webhookRetryFirstMs",
    default: "1000",
    doc: "Wait before a failed webhook POST (not 2xx, no answer) is tried again, in ms; it doubles each time up to `WEBHOOK_RETRY_MAX_MS`.",
    parse: integer(10, 3_600_000),
  },
  WEBHOOK_RETRY_MAX_MS: {
    key: "webhookRetryMaxMs",
    default: "60000",
    doc: "Longest wait between two tries of a webhook POST, in ms.",
    parse: integer(10, 3_600_000),
  },
  WEBHOOK_MAX_ATTEMPTS: {
    key: "webhookMaxAttempts",
    default: "10",
    doc: "Tries of one webhook POST before its events are dropped (logged, counted in `plate_webhook_events_total{outcome=\"dropped\"}`).",
    parse: integer(1, 1000),
  },
  WEBHOOK_MAX_QUEUED: {
    key: "webhookMaxQueued",
    default: "10000",
    doc: "Channel events one plate may have waiting for its webhook (in the store: Redis, or the embedded node's memory); past it the oldest go, so a receiver that is down holds a bounded amount of memory.",
    parse: integer(1, 10_000_000),
  },
  SLOW_CONSUMER_MAX_BYTES: {
    key: "slowConsumerMaxBytes",
    default: "1048576",
    doc: "Output a subscriber may have waiting unsent, in bytes; a message that would pass it drops the subscriber (4408 / stream end).",
    parse: integer(1024, 1024 * 1024 * 1024),
  },
  SLOW_CONSUMER_GRACE_MS: {
    key: "slowConsumerGraceMs",
    default: "1000",
    doc: "After the server ends a subscriber's connection (slow consumer, revocation, drain), how long its last bytes (close frame, SSE `error` event) may take to leave before the socket is destroyed.",
    parse: integer(0, 60_000),
  },
  SUBSCRIBER_NO_DELAY: {
    key: "subscriberNoDelay",
    default: "auto",
    doc: "When what is written to a subscriber's connection (SSE, WebSocket, route 9) leaves. `true`: at once, one packet a write (the socket's TCP_NODELAY). `false`: the kernel holds a small write while the subscriber has not acknowledged the previous one and sends them together (Nagle's algorithm, as Nchan's subscriber sockets run): fewer packets and less CPU a delivery under heavy fan-out, but a message that follows another within a round trip may wait for the client's acknowledgement, which clients delay (40 ms on Linux, up to 200 ms on Windows). `auto`: `true` while the node has room, `false` once its event loop is busy `SUBSCRIBER_NAGLE_LOAD_PERCENT` of the time or more over 200 ms (read every 100 ms), back to `true` when it is busy a quarter of that or less over a second (Nagle itself lowers the load: a resume at half would flip back at the next reading). Publish answers are not affected.",
    parse: noDelayMode,
  },
  SUBSCRIBER_NAGLE_LOAD_PERCENT: {
    key: "subscriberNagleLoadPercent",
    default: "50",
    doc: "With `SUBSCRIBER_NO_DELAY=auto`: the share of the time the node's event loop is busy (over 200 ms), in percent, from which subscriber sockets run with Nagle's algorithm; they send at once again when it falls to a quarter of it (over a second).",
    parse: integer(1, 100),
  },
  SUBSCRIBER_DIRECT_SEND: {
    key: "subscriberDirectSend",
    default: "true",
    doc: "Whether a message to a subscriber (SSE, WebSocket, route 9) whose socket has nothing waiting is written with one send(2) of its own (the `@plate/direct-send` addon, built at `npm install`) instead of through Node's stream, which costs more CPU per delivery than the send itself. In a fan-out those sends go to the addon up to 64 at a time, one call for all of them. Whatever the kernel does not take goes through Node as before, so limits and order are the same either way. `false` writes everything through Node; so does a node whose addon did not build (it logs a warning at start).",
    parse: boolean,
  },
  CORS_ORIGINS: {
    key: "corsOrigins",
    default: "*",
    doc: "Browser origins allowed to call the API, comma-separated (`https://a.example,https://b.example`), or `*`.",
    parse: origins,
  },
  BOOTSTRAP_PLATES: {
    key: "bootstrapPlates",
    default: "{}",
    doc: 'JSON `{"<plateId>":"<key secret>"}`: each plate is created at start if missing, with that key (all scopes). Secrets of 24+ characters.',
    parse: bootstrap,
  },
  PUBLISH_RATE_PER_S: {
    key: "publishRatePerS",
    default: "10000",
    doc: "Publishes per second one plate may make, over every node sharing the broker (one token bucket per plate, kept in Redis and taken by the publish script itself, or in the embedded broker); over it, 429 `rate_limited` with `Retry-After`. 0 = unlimited. A plate's own limit (admin API) replaces it.",
    parse: integer(0, 100_000_000),
  },
  PUBLISH_BURST: {
    key: "publishBurst",
    default: "20000",
    doc: "Size of that token bucket: publishes a plate may make at once after being idle.",
    parse: integer(1, 100_000_000),
  },
  PUBLISH_BYTES_PER_S: {
    key: "publishBytesPerS",
    default: "0",
    doc: "Bytes of messages one plate may publish per second, over every node (a token bucket beside the publish rate's, holding one second's worth, or one largest message if that is more); over it, 429 `rate_limited` with `Retry-After`. 0 = unlimited. A plate's own limit (admin API) replaces it.",
    parse: integer(0, 1_000_000_000),
  },
  CLIENT_PUBLISH_RATE_PER_S: {
    key: "clientPublishRatePerS",
    default: "20",
    doc: "Messages one realtime connection (route 9) may publish per second with `publish` frames (token bucket); over it, an error frame `rate_limited` and nothing published. 0 = unlimited. Client publishes also count against `PUBLISH_RATE_PER_S`.",
    parse: integer(0, 1_000_000),
  },
  CLIENT_PUBLISH_BURST: {
    key: "clientPublishBurst",
    default: "40",
    doc: "Size of that bucket: messages a connection may publish at once after being idle.",
    parse: integer(1, 1_000_000),
  },
  CLIENT_PUBLISH_PLATE_RATE_PER_S: {
    key: "clientPublishPlateRatePerS",
    default: "2000",
    doc: "Messages all of one plate's connections on one node may publish per second with `publish` frames, together (token bucket): its clients cannot use up the plate's `PUBLISH_RATE_PER_S`, which its backend shares. 0 = unlimited.",
    parse: integer(0, 100_000_000),
  },
  CLIENT_PUBLISH_PLATE_BURST: {
    key: "clientPublishPlateBurst",
    default: "4000",
    doc: "Size of that bucket.",
    parse: integer(1, 100_000_000),
  },
  MAX_CONNECTIONS_PER_PLATE: {
    key: "maxConnectionsPerPlate",
    default: "10000",
    doc: "Open SSE and WebSocket subscriptions one plate may hold over every node (each node adds the others' counts as they last reported them, see `CONNECTION_REPORT_MS`); over it, 429 `rate_limited`. 0 = unlimited.",
    parse: integer(0, 10_000_000),
  },
  CONNECTION_REPORT_MS: {
    key: "connectionReportMs",
    default: "1000",
    doc: "How often a node reports its plates' open connections to the store and learns the other nodes' (for `MAX_CONNECTIONS_PER_PLATE` over every node). A plate may pass its limit by what other nodes opened within one such period.",
    parse: integer(50, 60_000),
  },
  CONNECTION_LEASE_MS: {
    key: "connectionLeaseMs",
    default: "15000",
    doc: "How long a node's report of its open connections counts without being renewed (renewed every half of it, or at each change): the connections of a node that died stop counting within it.",
    parse: integer(1000, 600_000),
  },
  MAX_PENDING_CONNECTIONS: {
    key: "maxPendingConnections",
    default: "10000",
    doc: "WebSockets one node holds that have not authenticated yet (from the upgrade until the key or client token is accepted); over it, an upgrade is answered HTTP 429 `rate_limited` before the handshake. 0 = unlimited.",
    parse: integer(0, 10_000_000),
  },
  MAX_PENDING_CONNECTIONS_PER_ADDRESS: {
    key: "maxPendingConnectionsPerAddress",
    default: "100",
    doc: "The same, per client address (the TCP peer's: behind a proxy every client has the proxy's address, so raise it there or set 0 and limit at the proxy). 0 = unlimited.",
    parse: integer(0, 10_000_000),
  },
  CLIENT_TOKEN_MAX_DURATION_MS: {
    key: "clientTokenMaxDurationMs",
    default: String(DAY_MS),
    doc: "Largest `max_dur` a client token may be given, in ms.",
    parse: integer(1, 365 * DAY_MS),
  },
  CLIENT_TOKEN_MAX_USES: {
    key: "clientTokenMaxUses",
    default: "1000000",
    doc: "Largest `max_uses` a client token may be given (0, unlimited, is always allowed).",
    parse: integer(1, 1_000_000_000),
  },
  TOKEN_TOMBSTONE_MS: {
    key: "tokenTombstoneMs",
    default: "3600000",
    doc: "How long an expired client token still answers 410 `expired_client_socket` before it is forgotten (then 404).",
    parse: integer(0, 30 * DAY_MS),
  },
  SIGNED_TOKEN_CLOCK_SKEW_S: {
    key: "signedTokenClockSkewS",
    default: "30",
    doc: "Clock skew allowed between a backend that signs client tokens (route 11) and the node, on `exp` and `nbf`, in seconds.",
    parse: integer(0, 3600),
  },
  KEY_CACHE_MS: {
    key: "keyCacheMs",
    default: "1000",
    doc: "How long a node trusts an API key it looked up without asking the store again (a revocation drops it at once on every node that hears it; this bounds a node that did not). 0 = always ask.",
    parse: integer(0, 60_000),
  },
  HISTORY_COUNT: {
    key: "historyCount",
    default: "100",
    doc: "Messages kept per channel for resuming subscribers (`Last-Event-ID`, `since`). 0 = none: a resume is then complete only if nothing was published since, else `reset`.",
    parse: integer(0, 10_000),
  },
  HISTORY_AGE_MS: {
    key: "historyAgeMs",
    default: "120000",
    doc: "How long a channel's messages are kept for resuming, in ms (whichever of this and `HISTORY_COUNT` drops a message first).",
    parse: integer(1000, 7 * DAY_MS),
  },
  HISTORY_MARK_TTL_MS: {
    key: "historyMarkTtlMs",
    default: "86400000",
    doc: "How long a channel's last id and drop mark are remembered after its last publish, in ms (a few dozen bytes a channel): a subscriber of a quiet channel resumes without `reset` within it.",
    parse: integer(1000, 30 * DAY_MS),
  },
  HEAD_REUSE_MS: {
    key: "headReuseMs",
    default: "5000",
    doc: "How long a node may answer a new connection's starting position (its `ready` frame's `position`, the SSE `ready` event's `id:`) from what it already holds for that channel, in ms: the last message it delivered on it, or the position it read when it began delivering it. Within it, a connection that opens one subscription without resuming costs no read of the history (one Redis round trip and its garbage each, 10,000 of them in a burst of 10,000). The position may be older than the plate's newest by the publishes on other channels within this time; a client resuming from it misses nothing. 0 = read every time.",
    parse: integer(0, 60_000),
  },
  IDEMPOTENCY_WINDOW_MS: {
    key: "idempotencyWindowMs",
    default: "600000",
    doc: "How long a publish's `Idempotency-Key` is remembered, in ms: a retry with the same key by the same API key in the same plate within it answers the first publish's id and delivers nothing.",
    parse: integer(1000, 7 * DAY_MS),
  },
  METRICS_PLATE_LABELS: {
    key: "metricsPlateLabels",
    default: "0",
    doc: "Per-plate series (`plate_plate_messages_published_total`, `plate_plate_connections`) for at most this many plates, the first seen; later plates count under `_other`. 0 = no plate label at all.",
    parse: integer(0, 1000),
  },
  DRAIN_TIMEOUT_MS: {
    key: "drainTimeoutMs",
    default: "10000",
    doc: "On SIGTERM/SIGINT, how long the node waits for connections to close before it exits.",
    parse: integer(0, 600_000),
  },
  DEMO_PLATE: {
    key: "demoPlate",
    default: "true",
    doc: "On the embedded default, create plate `demo` with a key on a start that finds no plates, and print how to use it.",
    parse: boolean,
  },
  CONSOLE_ENABLED: {
    key: "consoleEnabled",
    default: "true",
    doc: "Serve the console page at `/console` and the browser client's modules at `/console/client/` (the page holds no secret; it uses the key typed into it).",
    parse: boolean,
  },
  LOG_LEVEL: {
    key: "logLevel",
    default: "info",
    doc: `Least severe log level written: ${LOG_LEVELS.join(", ")}.`,
    parse: logLevel,
  },
} as const satisfies { [variable: string]: Setting<keyof Config> };

/** The name of one environment variable Plate reads. */
export type SettingName = keyof typeof SETTINGS;

/**
 * Reads every setting from `env`; unset or empty variables take their default. Throws a
 * `ConfigError` naming the first bad variable.
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const config: Record<string, unknown> = {};
  for (const [variable, setting] of Object.entries(SETTINGS) as [string, Setting<keyof Config>][]) {
    const raw = env[variable];
    const value = raw === undefined || raw === "" ? setting.default : raw;
    config[setting.key] = value === undefined ? undefined : setting.parse(value, variable);
  }
  if (config.redisClusterNodes !== undefined && config.redisSentinels !== undefined) {
    throw new ConfigError("REDIS_SENTINELS", "set either REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both.");
  }
  return config as unknown as Config;
}

/** The Redis the node shares with the others; undefined: the embedded broker and store. */
export function redisTarget(config: Config): RedisTarget | undefined {
  const url = config.redisUrl;
  if (config.redisClusterNodes !== undefined) return { kind: "cluster", nodes: config.redisClusterNodes, ...(url === undefined ? {} : { url }) };
  if (config.redisSentinels !== undefined) {
    return { kind: "sentinel", sentinels: config.redisSentinels, masterName: config.redisSentinelMaster, ...(url === undefined ? {} : { url }) };
  }
  return url === undefined ? undefined : { kind: "standalone", url };
}
