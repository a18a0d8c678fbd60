import type { Cluster, RedisOptions } from "ioredis";
import { PlateError, bodyFromForeignPayload, comparePositions, compilePattern, formatPosition, newEpoch, parsePosition, readJsonObject } from "@plate/protocol";
import type { ChannelMatcher, ChannelName, Message, MessageId, PlateId, Sender, Topic } from "@plate/protocol";
import { BATCH_REFUSAL_MS, HISTORY_COST, HISTORY_SWEEP_MS, PUBLISH_BATCH_BYTES, PUBLISH_BATCH_MESSAGES, PUBLISH_GATHER_TURNS, afterRefusal, overBudget, rateLimited } from "./broker.js";
import type { Broker, GapPhase, HistoryBudget, HistoryRead, MessageListener, PublishRate, PublishRequest, PublishResult, Replay, Retention, Unsubscribe } from "./broker.js";
import { idempotencyName, resumeRule } from "./history.js";
import type { Order } from "./history.js";
import { RefusalWarnings, closeConnection, connectCommands, connectNode, connectPrimary, isCommandReady, reconnectOnReadOnly, redisRefusal } from "@plate/redis";
import type { Commands, RedisRefusal, RedisTarget, Warn } from "@plate/redis";
import { ClassicDelivery, ShardedDelivery } from "./redis-delivery.js";
import { PRESENCE_MARK, RedisPresence, withPresenceScripts } from "./redis-presence.js";
import type { PresenceScripts } from "./redis-presence.js";
import type { PresenceTimes } from "./presence.js";
import type { Delivery } from "./redis-delivery.js";
import { bulk, sendPublish, withHistoryScripts } from "./redis-history.js";
import type { HistoryScripts, PublishReply, ReadReply } from "./redis-history.js";
import { RedisNames } from "./redis-names.js";

/** Settings of the Redis broker; each is a setting of the edge node (see the README). */
export interface RedisBrokerOptions {
  /** The Redis to use: one server, Sentinel, or a cluster (see `RedisTarget`). */
  readonly target: RedisTarget;
  /** On a cluster, how often the slot map is read again when nothing failed, in ms (`REDIS_CLUSTER_REFRESH_MS`). */
  readonly clusterRefreshMs?: number;
  /** Put before every Redis channel name (`REDIS_KEY_PREFIX`). */
  readonly keyPrefix: string;
  /** How long one Redis command may take before it fails, in ms. */
  readonly commandTimeoutMs: number;
  /** Longest wait between two reconnect attempts, in ms. */
  readonly reconnectMaxMs: number;
  /** How often the silent-loss probe is sent while the node has subscriptions, in ms. */
  readonly probeIntervalMs: number;
  /** How long a probe may take to come back before the subscriber connection counts as deaf, in ms. */
  readonly probeTimeoutMs: number;
  /** This node's id, unique among the nodes (names its probe channel). */
  readonly nodeId: string;
  /** Gives an id to a message a backend PUBLISHed straight into Redis (it carries none). */
  readonly newMessageId: () => MessageId;
  /** Where the broker reports what an operator should know (connection loss, deafness). */
  readonly warn?: Warn;
  /** Called each time a silent-loss probe did not come back in time (for a metric). */
  readonly onProbeLost?: () => void;
  /** Presence leases (`PRESENCE_LEASE_MS`, `PRESENCE_SWEEP_MS`); defaults `DEFAULT_PRESENCE_TIMES`. */
  readonly presence?: PresenceTimes;
  /**
   * Whether a run of messages one publish script sends to one channel goes out as one pub/sub
   * message (`BATCH_MARK`; default true, `REDIS_PUBSUB_BATCHES`), and is kept in the channel's
   * history as one entry (redis-history.ts): one PUBLISH and one XADD per run instead of one per
   * message, for Redis and for every subscribed node. Every node reads both forms either way; a
   * node of a version before them does not, so a rolling upgrade from one runs with false until
   * every node is upgraded.
   */
  readonly pubsubBatches?: boolean;
}

/** A dead node's members are gone within about 20 s: a lease of 15 s, renewed every 5 s, swept every 5 s. */
export const DEFAULT_PRESENCE_TIMES: PresenceTimes = { leaseMs: 15_000, sweepMs: 5_000 };

/** First wait before reconnecting, in ms; it doubles up to `reconnectMaxMs`. */
const RECONNECT_FIRST_MS = 50;

/**
 * Marks a payload that a Plate node published: `MARK id SEP timestamp SEP body`; with an event
 * name, `EVENT_MARK id SEP timestamp SEP event SEP body`; published by a client from its
 * connection, `SENDER_MARK id SEP timestamp SEP event SEP from SEP body` (the event may be empty,
 * `from` is the sender as JSON). JSON text never holds a raw U+001F (the JSON grammar forbids
 * control characters unescaped), so the separator is safe inside the body's and the sender's
 * neighbours, and a foreign payload practically never starts with a mark. Chosen over a JSON
 * wrapper so a node neither parses nor re-serializes the body: the body's text goes into the
 * envelope as it is.
 */
const MARK = "\u001fP1\u001f";
const EVENT_MARK = "\u001fP2\u001f";
const SENDER_MARK = "\u001fP3\u001f";
/**
 * Starts a pub/sub payload whose message carries `volatile` metadata: `VOLATILE_MARK volatile`
 * then the payload as the history keeps it (which starts with its own mark, so with SEP). The
 * history never holds it.
 */
const VOLATILE_MARK = "\u001fPV\u001f";
const SEP = "\u001f";
/**
 * Starts the pub/sub payload of a run of messages that one publish script sent to one channel
 * together (`pubsubBatches`): `BATCH_MARK payload RS payload ...`, each payload as it would be
 * published alone. RS (U+001E) is a control character too, so no payload holds it. A node of an
 * older version delivers such a payload as a plain string (see `RedisBrokerOptions.pubsubBatches`).
 */
const BATCH_MARK = "\u001fPB\u001f";
const RS = "\u001e";

/** The letters of a plain message (redis-history.ts PUBLISH), as a RESP bulk string. */
const EMPTY_BULK = bulk("");

/** The mark of a message's payload, and what goes between its timestamp and its body. */
function payloadShape(message: Pick<Message, "event" | "from">): { mark: string; middle: string } {
  if (message.from !== undefined) return { mark: SENDER_MARK, middle: (message.event ?? "") + SEP + JSON.stringify(message.from) + SEP };
  if (message.event !== undefined) return { mark: EVENT_MARK, middle: message.event + SEP };
  return { mark: MARK, middle: "" };
}

/**
 * The publish script's rate arguments (redis-history.ts): both rates 0 when there is none. The
 * last is how long the fuller bucket takes to fill again (a second more): the plate's publish
 * state lives at least that long, after which the buckets would start full anyway.
 */
function rateArgs(rate: PublishRate | undefined): number[] {
  if (rate === undefined) return [0, 0, 0, 0, 0];
  const refillMs = Math.max(rate.perS > 0 ? (rate.burst * 1000) / rate.perS : 0, rate.bytesPerS > 0 ? (rate.bytesBurst * 1000) / rate.bytesPerS : 0);
  return [rate.perS, rate.burst, rate.bytesPerS, rate.bytesBurst, Math.ceil(refillMs) + 1000];
}

/** Whether two publishes of one plate carry the same settings (one script sends them once). */
function sameSettings(a: PublishRequest, b: PublishRequest): boolean {
  const ra = a.retention;
  const rb = b.retention;
  if (ra !== rb && (ra.count !== rb.count || ra.ageMs !== rb.ageMs || ra.markTtlMs !== rb.markTtlMs)) return false;
  const pa = a.rate;
  const pb = b.rate;
  if (pa !== pb && (pa === undefined || pb === undefined || pa.perS !== pb.perS || pa.burst !== pb.burst || pa.bytesPerS !== pb.bytesPerS || pa.bytesBurst !== pb.bytesBurst)) return false;
  const ba = a.budget;
  const bb = b.budget;
  return ba === bb || (ba !== undefined && bb !== undefined && ba.channels === bb.channels && ba.bytes === bb.bytes);
}

/** What the publish script answered for `request` (redis-history.ts), as `Broker.publish` answers. */
function publishResult(request: PublishRequest, reply: PublishReply): PublishResult {
  if (reply[0] === 2) throw rateLimited(request.rate!, reply[1]);
  if (reply[0] === 3) throw overBudget(reply[1], reply[2]);
  if (reply[0] === 4) throw afterRefusal();
  const { plateId, channel } = request;
  if (reply[0] === 1) {
    const message: Message = {
      plateId,
      channel,
      id: reply[1] as MessageId,
      timestamp: request.timestamp,
      body: request.body,
      ...(request.event === undefined ? {} : { event: request.event }),
      ...(request.from === undefined ? {} : { from: request.from }),
    };
    return { message, repeated: false };
  }
  const [id, timestamp, firstChannel] = reply[1].split(SEP);
  return { message: { plateId, channel: firstChannel as ChannelName, id: id as MessageId, timestamp: timestamp!, body: "" }, repeated: true };
}

/** A publish waiting for its turn's script. */
interface UnsentPublish {
  readonly request: PublishRequest;
  readonly resolve: (result: PublishResult) => void;
  readonly reject: (err: unknown) => void;
}

/** The Redis payload of a message published by a node. */
export function encodeRedisPayload(message: Message): string {
  const { mark, middle } = payloadShape(message);
  return mark + message.id + SEP + message.timestamp + SEP + middle + message.body;
}

/**
 * Which mark `payload` holds at `at`: 0 (`MARK`), 1 (`EVENT_MARK`), 2 (`SENDER_MARK`), 3
 * (`VOLATILE_MARK`), 4 (`BATCH_MARK`), or -1 (none: not a node's).
 */
function markAt(payload: string, at = 0): number {
  return payload.startsWith(MARK, at)
    ? 0
    : payload.startsWith(EVENT_MARK, at)
      ? 1
      : payload.startsWith(SENDER_MARK, at)
        ? 2
        : payload.startsWith(VOLATILE_MARK, at)
          ? 3
          : payload.startsWith(BATCH_MARK, at)
            ? 4
            : -1;
}

/**
 * The messages of a run's payload (`BATCH_MARK payload RS payload ...`: on pub/sub, or kept as one
 * history entry), in order; what is not a node's message is dropped.
 */
function decodeBatch(plateId: PlateId, channel: ChannelName, payload: string): Message[] {
  const messages: Message[] = [];
  let from = BATCH_MARK.length;
  while (from <= payload.length) {
    let to = payload.indexOf(RS, from);
    if (to < 0) to = payload.length;
    const message = decodeNodePayload(plateId, channel, payload.slice(from, to));
    if (message !== undefined) messages.push(message);
    from = to + 1;
  }
  return messages;
}

/** A node's payload as a message of `plateId`'s `channel`; undefined if it is not one. */
function decodeNodePayload(plateId: PlateId, channel: ChannelName, payload: string): Message | undefined {
  const fields = markAt(payload);
  if (fields === 3) {
    // The volatile JSON ends where the stored payload's mark starts (JSON holds no raw SEP).
    const end = payload.indexOf(SEP, VOLATILE_MARK.length);
    const inner = end < 0 ? -1 : markAt(payload, end);
    if (inner < 0 || inner >= 3) return undefined;
    const message = decodeNodePayload(plateId, channel, payload.slice(end));
    return message === undefined ? undefined : { ...message, volatile: payload.slice(VOLATILE_MARK.length, end) };
  }
  if (fields < 0 || fields === 4) return undefined;
  const idEnd = payload.indexOf(SEP, MARK.length);
  const timeEnd = payload.indexOf(SEP, idEnd + 1);
  if (idEnd < 0 || timeEnd < 0) return undefined;
  const id = payload.slice(MARK.length, idEnd) as MessageId;
  const timestamp = payload.slice(idEnd + 1, timeEnd);
  if (fields === 0) return { plateId, channel, id, timestamp, body: payload.slice(timeEnd + 1) };
  const eventEnd = payload.indexOf(SEP, timeEnd + 1);
  if (eventEnd < 0) return undefined;
  const event = payload.slice(timeEnd + 1, eventEnd);
  if (fields === 1) return { plateId, channel, id, timestamp, event, body: payload.slice(eventEnd + 1) };
  const fromEnd = payload.indexOf(SEP, eventEnd + 1);
  if (fromEnd < 0) return undefined;
  const from = readSender(payload.slice(eventEnd + 1, fromEnd));
  if (from === undefined) return undefined;
  return { plateId, channel, id, timestamp, ...(event === "" ? {} : { event }), from, body: payload.slice(fromEnd + 1) };
}

/** A sender written by `payloadShape`; undefined for anything else. */
function readSender(text: string): Sender | undefined {
  const value = readJsonObject(text);
  if (value === undefined) return undefined;
  const { clientId, user } = value;
  if (typeof clientId !== "string" || (user !== undefined && typeof user !== "string")) return undefined;
  return user === undefined ? { clientId } : { clientId, user };
}

/** "ms-seq" as an order. */
function parseOrder(text: string | null): Order | undefined {
  if (text === null) return undefined;
  const dash = text.indexOf("-");
  return { ms: Number(text.slice(0, dash)), seq: Number(text.slice(dash + 1)) };
}

/** The local subscribers of one concrete channel. */
interface ChannelInterest {
  readonly plateId: PlateId;
  readonly channel: ChannelName;
  readonly listeners: Set<MessageListener>;
  /** Resolves once Redis confirmed the subscription that created this interest. */
  readonly active: Promise<void>;
}

/** The local pattern subscribers of one plate, all served by its plate-wide channel. */
interface PlateInterest {
  readonly plateId: PlateId;
  readonly patterns: Map<string, { readonly matches: ChannelMatcher; readonly listeners: Set<MessageListener> }>;
  readonly active: Promise<void>;
}

/**
 * The broker for many nodes sharing Redis: one server, a primary watched by Sentinel, or a Redis
 * Cluster. Messages go through Redis pub/sub (sharded pub/sub on a cluster). A node listens to a
 * channel only while at least one local subscription needs it (reference-counted per Redis name),
 * so it receives no traffic for channels nobody on it watches.
 *
 * - Patterns cost nothing to other plates: every publish also goes to its plate's plate-wide
 *   channel (redis-names.ts), which a node listens to while it has pattern subscribers of that
 *   plate, matching each pattern itself. No PSUBSCRIBE is ever made (each one taxes every PUBLISH
 *   of every plate, and keeps taxing it after it is gone until Redis restarts).
 * - Commands fail at once while Redis is unreachable (no offline queue), so a publish answers
 *   `broker_unavailable` instead of hanging, and nothing was published. On a cluster only the
 *   plates of a master that is down fail.
 * - Redis refusing a command (OOM, READONLY, ...) answers `broker_unavailable` naming the refusal,
 *   warned once until a command succeeds again. READONLY (a primary demoted by a failover) also
 *   reconnects the command connection, so it reaches the new primary (at the same address, or
 *   where Sentinel says it is now).
 * - Delivery (redis-delivery.ts) resubscribes after every reconnect, watches its connections with
 *   deaf probes, and tells `onGap` which plates may have missed messages.
 * - A Redis message is decoded once into one `Message` object for every local listener, including
 *   a channel listener and a pattern listener that both match it (Redis sends it twice: on the
 *   channel and on the plate-wide channel).
 */
export class RedisBroker implements Broker {
  readonly #options: RedisBrokerOptions;
  readonly #names: RedisNames;
  readonly #commands: Commands & HistoryScripts & PresenceScripts;
  readonly presence: RedisPresence;
  readonly #delivery: Delivery;
  /** PUBLISH, or SPUBLISH on a cluster. */
  readonly #publishCommand: string;
  readonly #channels = new Map<string, ChannelInterest>();
  readonly #plates = new Map<string, PlateInterest>();
  /** Listeners of node-to-node notes, by Redis channel (see `send`). */
  readonly #notes = new Map<string, Set<(payload: string) => void>>();
  readonly #readyListeners = new Set<(ready: boolean) => void>();
  readonly #gapListeners = new Set<(phase: GapPhase, plates?: ReadonlySet<PlateId>) => void>();
  #ready = false;
  #closed = false;
  readonly #refusals: RefusalWarnings;
  /** Shared reads of plates' heads for fresh subscriptions, until sent (see `#headOf`). */
  readonly #headReads = new Map<PlateId, Promise<ReadReply>>();
  /**
   * The last payload decoded, its plate and channel, the messages it became, and the names it was
   * delivered under. Redis sends one publish once per matching name (its channel, its plate-wide channel),
   * back to back; the same payload under a name it already went to is a new publish (a backend may
   * PUBLISH the same text twice), so it is decoded anew.
   */
  #lastPlate = "";
  #lastChannel = "";
  #lastPayload = "";
  #lastMessages: readonly Message[] = [];
  readonly #lastNames: string[] = [];
  /** Publishes waiting for the end of this turn of the event loop, by plate (see `publish`). */
  readonly #unsent = new Map<PlateId, UnsentPublish[]>();
  #sendScheduled = false;
  /** Publishes in `#unsent` (every plate's), and as many as at the end of the last turn gathered. */
  #queued = 0;
  #queuedAtTurnEnd = 0;
  /** Turns the waiting publishes were gathered past the one they came in (see `#endOfTurn`). */
  #gatheredTurns = 0;
  /** How many publishes the last send carried: more than one when the node is busy publishing. */
  #lastSent = 0;

  constructor(options: RedisBrokerOptions) {
    this.#options = options;
    const { target } = options;
    const cluster = target.kind === "cluster";
    this.#names = new RedisNames(options.keyPrefix, cluster);
    this.#publishCommand = cluster ? "SPUBLISH" : "PUBLISH";
    this.#refusals = new RefusalWarnings(options.warn, "redis refuses the broker's commands");
    const common: RedisOptions = {
      commandTimeout: options.commandTimeoutMs,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (attempt) => Math.min(RECONNECT_FIRST_MS * 2 ** Math.min(attempt, 16), options.reconnectMaxMs),
      // Resubscription is the delivery's: ioredis' own would also restore names dropped while down.
      autoResubscribe: false,
    };
    this.#commands = withPresenceScripts(
      withHistoryScripts(
        connectCommands(
          target,
          // The publish script gathers its own batches (group commit) and is sent as it is
          // (`sendPublish`, never in an automatic pipeline). The head read is shared per plate
          // and turn (`#headOf`): an automatic pipeline is a ~3 KB `Pipeline` object per turn, so
          // a read a turn was 3 KB of garbage per connection opened (heap sampling, W4 on Redis).
          { ...common, enableAutoPipelining: true, autoPipeliningIgnoredCommands: ["plateReadHistory"], connectionName: `plate-${options.nodeId}-cmd`, reconnectOnError: reconnectOnReadOnly },
          options.clusterRefreshMs === undefined ? {} : { slotsRefreshMs: options.clusterRefreshMs },
        ),
      ),
    );
    this.presence = new RedisPresence({
      commands: () => this.#live,
      names: this.#names,
      publishCommand: this.#publishCommand,
      nodeId: options.nodeId,
      times: options.presence ?? DEFAULT_PRESENCE_TIMES,
      join: (plateId, channel) => this.subscribe({ plateId, pattern: false, channel }, ignore),
      failed: (err) => this.#failed(err),
      warn: options.warn ?? (() => undefined),
    });
    this.#commands.on("ready", () => this.#update());
    this.#commands.on("close", () => this.#update());
    this.#commands.on("end", () => this.#update());
    this.#commands.on("error", () => undefined);
    const settings = {
      probeIntervalMs: options.probeIntervalMs,
      probeTimeoutMs: options.probeTimeoutMs,
      warn: options.warn,
      wanted: () => (this.#channels.size > 0 || this.#plates.size > 0) && this.#ready,
    };
    const events = {
      message: (name: string, payload: string) => this.#onMessage(name, payload),
      gap: (phase: GapPhase, plates: ReadonlySet<PlateId> | undefined) => {
        for (const listener of this.#gapListeners) listener(phase, plates);
      },
      changed: () => this.#update(),
      probeLost: () => options.onProbeLost?.(),
    };
    // A connection that cannot be made within a command's time fails the subscriptions waiting on it.
    const subscriberOptions = { ...common, connectTimeout: options.commandTimeoutMs, connectionName: `plate-${options.nodeId}-sub` };
    this.#delivery = cluster
      ? new ShardedDelivery(
          this.#commands as Cluster,
          (nodeKey) => connectNode(target, nodeKey, { ...subscriberOptions, connectionName: `plate-${options.nodeId}-ssub` }),
          (slotTag) => this.#names.probe(options.nodeId, slotTag),
          settings,
          events,
        )
      : new ClassicDelivery(
          connectPrimary(target, subscriberOptions),
          this.#names.probe(options.nodeId),
          (channel, payload) => this.#commands.publish(channel, payload),
          settings,
          events,
        );
  }

  /**
   * One script (redis-history.ts) gives the id, appends to the channel's history, trims it and
   * publishes, atomically: a message is in the history if and only if it went out. What one turn
   * of the event loop publishes to a plate goes in one script (group commit, in order): under load
   * a publish costs Redis a third of what it costs alone, and a lone publish waits for nothing but
   * the end of its turn. A node busy publishing gathers a few turns more (`#endOfTurn`).
   */
  publish(request: PublishRequest): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      let queue = this.#unsent.get(request.plateId);
      if (queue === undefined) {
        queue = [];
        this.#unsent.set(request.plateId, queue);
      }
      queue.push({ request, resolve, reject });
      this.#queued++;
      if (!this.#sendScheduled) {
        this.#sendScheduled = true;
        this.#gatheredTurns = 0;
        setImmediate(this.#endOfTurn);
      }
    });
  }

  /**
   * At the end of a turn that queued publishes: sends them (`#sendUnsent`), unless the node is
   * busy publishing (its last send carried more than one). Then it gathers them for one turn
   * more, and for more turns up to `PUBLISH_GATHER_TURNS` while each brings new publishes, until
   * a script's worth (`PUBLISH_BATCH_MESSAGES`) is waiting.
   *
   * Publishers answered together publish again together, but their requests reach the node over
   * a few turns: W3's 64 publishers went out in scripts of about 26 messages, a script a turn.
   * Gathered, the scripts carry about 52, and Redis' CPU a publish fell from 7.4-8.0 µs to
   * 5.4-5.6. Where the node and its Redis share a core (W3 in docs/performance.md) the node also
   * loses its core to Redis half as often: 31,600-35,200 publishes/s became 37,900-39,300 (issue 18).
   */
  readonly #endOfTurn = (): void => {
    const gather =
      this.#lastSent > 1 &&
      this.#gatheredTurns < PUBLISH_GATHER_TURNS &&
      this.#queued < PUBLISH_BATCH_MESSAGES &&
      (this.#gatheredTurns === 0 || this.#queued > this.#queuedAtTurnEnd);
    if (!gather) {
      this.#sendUnsent();
      return;
    }
    this.#gatheredTurns++;
    this.#queuedAtTurnEnd = this.#queued;
    setImmediate(this.#endOfTurn);
  };

  /**
   * Sends every plate's waiting publishes, in order, in scripts of at most `PUBLISH_BATCH_MESSAGES`
   * messages and `PUBLISH_BATCH_BYTES` bytes whose messages share their plate's settings
   * (retention, rates, budget: sent once per script).
   */
  #sendUnsent(): void {
    this.#sendScheduled = false;
    this.#lastSent = this.#queued;
    this.#queued = 0;
    for (const [plateId, queue] of this.#unsent) {
      this.#unsent.delete(plateId);
      let from = 0;
      while (from < queue.length) {
        const first = queue[from]!.request;
        let to = from + 1;
        let bytes = first.body.length;
        while (to < queue.length && to - from < PUBLISH_BATCH_MESSAGES) {
          const next = queue[to]!.request;
          if (bytes + next.body.length > PUBLISH_BATCH_BYTES || !sameSettings(first, next)) break;
          bytes += next.body.length;
          to++;
        }
        void this.#publishBatch(plateId, queue.slice(from, to));
        from = to;
      }
    }
  }

  async #publishBatch(plateId: PlateId, batch: readonly UnsentPublish[]): Promise<void> {
    const { retention, rate, budget } = batch[0]!.request;
    const plateKeys = [...this.#names.plateHistoryKeys(plateId), ...this.#names.publishState(plateId)];
    let keys = "";
    for (const key of plateKeys) keys += bulk(key);
    const settings: (string | number)[] = [
      newEpoch(),
      SEP,
      this.#publishCommand,
      this.#names.plateWide(plateId),
      HISTORY_COST.entry,
      HISTORY_COST.stream,
      HISTORY_COST.remembered,
      HISTORY_COST.idempotency,
      HISTORY_SWEEP_MS,
      BATCH_REFUSAL_MS,
      batch.length,
      this.#names.channelPrefix(plateId),
      retention.count,
      retention.ageMs,
      retention.markTtlMs,
      ...rateArgs(rate),
      budget === undefined ? "0" : "1",
      budget?.channels ?? 0,
      budget?.bytes ?? 0,
      this.#options.pubsubBatches === false ? "" : BATCH_MARK,
      MARK,
    ];
    let args = "";
    for (const arg of settings) args += bulk(String(arg));
    let keyCount = plateKeys.length;
    let argCount = settings.length;
    // Each message says what differs from a plain message of the message before it, a letter each
    // (redis-history.ts PUBLISH): a plain message to the channel and millisecond of the one before
    // is its letters ('') and its body.
    let runChannel: ChannelName | undefined;
    let lastTimestamp: string | undefined;
    for (const { request } of batch) {
      const { channel, idempotency, rate } = request;
      let letters = "";
      let fields = "";
      if (channel !== runChannel) {
        runChannel = channel;
        const [stream, marks] = this.#names.channelHistoryKeys(plateId, channel);
        keys += bulk(stream) + bulk(marks);
        keyCount += 2;
        letters += "c";
        fields += bulk(channel);
        argCount += 1;
      }
      if (request.timestamp !== lastTimestamp) {
        lastTimestamp = request.timestamp;
        letters += "t";
        fields += bulk(request.timestamp);
        argCount += 1;
      }
      // A plain message (the most common) has the plain mark and nothing after its timestamp.
      if (request.event !== undefined || request.from !== undefined) {
        const shape = payloadShape(request);
        letters += "m";
        fields += bulk(shape.mark) + bulk(shape.middle);
        argCount += 2;
      }
      if (request.volatile !== undefined) {
        letters += "v";
        fields += bulk(VOLATILE_MARK + request.volatile);
        argCount += 1;
      }
      if (rate !== undefined) {
        if (rate.count === 1) {
          letters += "r";
          fields += bulk(String(rate.bytes));
          argCount += 1;
        } else {
          letters += "R";
          fields += bulk(String(rate.count)) + bulk(String(rate.bytes));
          argCount += 2;
        }
      }
      if (idempotency !== undefined) {
        keys += bulk(this.#names.idempotency(plateId, idempotencyName(idempotency)));
        keyCount += 1;
        letters += "i";
        fields += bulk(String(idempotency.windowMs));
        argCount += 1;
      }
      if (request.batch !== undefined) {
        keys += bulk(this.#names.batch(plateId, request.batch));
        keyCount += 1;
        letters += "b";
      }
      args += (letters === "" ? EMPTY_BULK : bulk(letters)) + fields + bulk(request.body);
      argCount += 2;
    }
    const call = { messages: batch.length, slotKey: plateKeys[0]!, keyCount, keys, argCount, args };
    let replies;
    try {
      replies = await sendPublish(this.#live, call);
    } catch (err) {
      const failure = this.#failed(err);
      for (const unsent of batch) unsent.reject(failure);
      return;
    }
    this.#refusals.succeeded();
    for (let i = 0; i < batch.length; i++) {
      const { request, resolve, reject } = batch[i]!;
      try {
        resolve(publishResult(request, replies[i]!));
      } catch (err) {
        reject(err);
      }
    }
  }

  async historyUsage(plateId: PlateId, retention: Retention): Promise<HistoryBudget> {
    let reply;
    try {
      reply = await this.#live.plateHistoryUsage(...this.#names.publishState(plateId), retention.ageMs, retention.markTtlMs, HISTORY_COST.stream, HISTORY_COST.remembered, HISTORY_COST.idempotency);
    } catch (err) {
      throw this.#failed(err);
    }
    return { channels: reply[0], bytes: reply[1] };
  }

  async history(plateId: PlateId, channel: ChannelName, since: string | undefined, retention: Retention): Promise<Replay> {
    let reply;
    try {
      reply = await (since === undefined ? this.#headOf(plateId, channel) : this.#live.plateReadHistory(...this.#readArgs(plateId, channel, since)));
    } catch (err) {
      throw this.#failed(err);
    }
    return this.#replayOf(plateId, channel, since, reply, retention);
  }

  /**
   * The read a fresh subscription needs (its plate's head; no channel's history), shared by every
   * one of the plate asked for in this event-loop turn: one script at `setImmediate`, sent after
   * each of them asked, so after each one's broker subscription was made, as a read of its own
   * would be. A burst of connections costs a script per plate per turn instead of one each (and
   * each script's garbage: a Redis node held 10 KB per connection 2 s after opening 10,000 against
   * 6.4 KB on the embedded broker, W4). Its reply's channel fields are those of the first asker's
   * channel: a fresh subscription reads only the plate's epoch and head.
   */
  #headOf(plateId: PlateId, channel: ChannelName): Promise<ReadReply> {
    let read = this.#headReads.get(plateId);
    if (read === undefined) {
      read = new Promise<ReadReply>((resolve, reject) => {
        setImmediate(() => {
          this.#headReads.delete(plateId);
          try {
            this.#live.plateReadHistory(...this.#readArgs(plateId, channel, undefined)).then(resolve, reject);
          } catch (err) {
            // Redis went down in between (`#live` throws its PlateError): every asker gets it.
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
      });
      this.#headReads.set(plateId, read);
    }
    return read;
  }

  /**
   * One MULTI of the read script per channel: Redis runs them back to back, nothing in between.
   * Every key is in the plate's slot, so the MULTI is single-slot on a cluster too.
   */
  async histories(plateId: PlateId, reads: readonly HistoryRead[], retention: Retention): Promise<Replay[]> {
    // Heads only: asked in one turn, they share one read of the plate's head (`#headOf`), one instant.
    if (reads.length === 1 || reads.every((read) => read.since === undefined)) {
      return Promise.all(reads.map((read) => this.history(plateId, read.channel, read.since, retention)));
    }
    const multi = this.#live.multi() as unknown as HistoryScripts & { exec(): Promise<[Error | null, unknown][] | null> };
    for (const read of reads) void multi.plateReadHistory(...this.#readArgs(plateId, read.channel, read.since));
    let results;
    try {
      results = await multi.exec();
    } catch (err) {
      throw this.#failed(err);
    }
    if (results === null) throw unavailable();
    return results.map(([err, reply], i) => {
      if (err !== null) throw this.#failed(err);
      return this.#replayOf(plateId, reads[i]!.channel, reads[i]!.since, reply as ReadReply, retention);
    });
  }

  #readArgs(plateId: PlateId, channel: ChannelName, since: string | undefined): string[] {
    const position = since === undefined ? undefined : parsePosition(since);
    return [...this.#names.historyKeys(plateId, channel), newEpoch(), position === undefined ? "" : position.ms + "-" + position.seq];
  }

  #replayOf(plateId: PlateId, channel: ChannelName, since: string | undefined, reply: ReadReply, retention: Retention): Replay {
    const [epoch, headMs, headSeq, last, dropped, now, entries] = reply;
    const headOrder = { ms: Number(headMs), seq: Number(headSeq) };
    const head = formatPosition({ epoch, ...headOrder });
    if (since === undefined) return { complete: true, messages: [], head };
    const marks = { last: parseOrder(last), dropped: parseOrder(dropped) };
    const rule = resumeRule(since, epoch, headOrder, marks, Number(now), retention.markTtlMs);
    if (rule.kind === "reset") return { complete: false, reason: rule.reason, head };
    const messages: Message[] = [];
    for (const [, fields] of entries) {
      const payload = fields[1]!;
      if (markAt(payload) !== 4) {
        const message = decodeNodePayload(plateId, channel, payload);
        if (message !== undefined) messages.push(message);
        continue;
      }
      // A run kept as one entry (redis-history.ts), read from its last id on: those up to `since`
      // are not what the subscriber missed (nor are those its trim skipped, which are older).
      for (const message of decodeBatch(plateId, channel, payload)) {
        const position = parsePosition(message.id);
        if (position !== undefined && comparePositions(position, rule.after) > 0) messages.push(message);
      }
    }
    return { complete: true, messages, head };
  }

  async send(address: string, payload: string): Promise<number> {
    const name = this.#names.node(address);
    try {
      const nodes = Number(
        await (this.#publishCommand === "SPUBLISH" ? (this.#live as Cluster).spublish(name, payload) : this.#live.publish(name, payload)),
      );
      this.#refusals.succeeded();
      return nodes;
    } catch (err) {
      throw this.#failed(err);
    }
  }

  async listen(address: string, listener: (payload: string) => void): Promise<Unsubscribe> {
    if (this.#closed) throw new Error("RedisBroker is closed");
    const name = this.#names.node(address);
    let listeners = this.#notes.get(name);
    const first = listeners === undefined;
    if (listeners === undefined) {
      listeners = new Set();
      this.#notes.set(name, listeners);
    }
    const delivery = (payload: string) => listener(payload);
    listeners.add(delivery);
    const joined = listeners;
    const leave = async () => {
      if (!joined.delete(delivery) || joined.size > 0 || this.#notes.get(name) !== joined) return;
      this.#notes.delete(name);
      await this.#delivery.remove(name);
    };
    if (first) {
      try {
        await this.#delivery.add(name, undefined);
      } catch (err) {
        await leave();
        throw unavailable(err, redisRefusal(err));
      }
    }
    return leave;
  }

  async subscribe(topic: Topic, listener: MessageListener): Promise<Unsubscribe> {
    if (this.#closed) throw new Error("RedisBroker is closed");
    if (!this.#ready) throw unavailable();
    // Wrap so that the same function subscribed twice counts as two deliveries.
    const delivery: MessageListener = (message) => listener(message);
    let active: Promise<void>;
    let leave: () => Promise<void>;
    if (topic.pattern) {
      const name = this.#names.plateWide(topic.plateId);
      let interest = this.#plates.get(name);
      if (interest === undefined) {
        interest = { plateId: topic.plateId, patterns: new Map(), active: this.#delivery.add(name, topic.plateId) };
        this.#plates.set(name, interest);
      }
      let entry = interest.patterns.get(topic.channel);
      if (entry === undefined) {
        entry = { matches: compilePattern(topic.channel), listeners: new Set() };
        interest.patterns.set(topic.channel, entry);
      }
      entry.listeners.add(delivery);
      const [joined, joinedEntry] = [interest, entry];
      active = joined.active;
      leave = async () => {
        if (!joinedEntry.listeners.delete(delivery) || joinedEntry.listeners.size > 0) return;
        if (joined.patterns.get(topic.channel) === joinedEntry) joined.patterns.delete(topic.channel);
        if (joined.patterns.size > 0 || this.#plates.get(name) !== joined) return;
        this.#plates.delete(name);
        await this.#delivery.remove(name);
      };
    } else {
      const name = this.#names.channel(topic.plateId, topic.channel);
      let interest = this.#channels.get(name);
      if (interest === undefined) {
        interest = { plateId: topic.plateId, channel: topic.channel, listeners: new Set(), active: this.#delivery.add(name, topic.plateId) };
        this.#channels.set(name, interest);
      }
      interest.listeners.add(delivery);
      const joined = interest;
      active = joined.active;
      leave = async () => {
        if (!joined.listeners.delete(delivery) || joined.listeners.size > 0 || this.#channels.get(name) !== joined) return;
        this.#channels.delete(name);
        await this.#delivery.remove(name);
      };
    }
    try {
      await active;
    } catch (err) {
      await leave();
      throw unavailable(err, redisRefusal(err));
    }
    let left = false;
    return () => {
      if (left) return Promise.resolve();
      left = true;
      return leave();
    };
  }

  isReady(): boolean {
    return this.#ready;
  }

  onGap(listener: (phase: GapPhase, plates?: ReadonlySet<PlateId>) => void): () => void {
    this.#gapListeners.add(listener);
    return () => this.#gapListeners.delete(listener);
  }

  onReadyChange(listener: (ready: boolean) => void): () => void {
    this.#readyListeners.add(listener);
    return () => this.#readyListeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#channels.clear();
    this.#plates.clear();
    this.#notes.clear();
    this.#readyListeners.clear();
    this.#gapListeners.clear();
    this.presence.close();
    this.#ready = false;
    await Promise.all([closeConnection(this.#commands), this.#delivery.close()]);
  }

  /** The command connection, when a command sent now goes out; else `broker_unavailable` is thrown. */
  get #live(): Commands & HistoryScripts & PresenceScripts {
    if (!isCommandReady(this.#commands)) throw unavailable();
    return this.#commands;
  }

  /** The error a failed command becomes; a Redis refusal is warned once until a publish succeeds. */
  #failed(err: unknown): PlateError {
    return unavailable(err, this.#refusals.failed(err));
  }

  #onMessage(name: string, payload: string): void {
    const notes = this.#notes.get(name);
    if (notes !== undefined) {
      for (const listener of notes) {
        try {
          listener(payload);
        } catch {
          // A listener must not throw; one that does cannot stop the others.
        }
      }
      return;
    }
    const interest = this.#channels.get(name);
    if (interest !== undefined) {
      if (payload.startsWith(PRESENCE_MARK)) {
        this.presence.deliver(name, payload);
        return;
      }
      for (const message of this.#decode(name, interest.plateId, interest.channel, payload)) deliver(interest.listeners, message);
      return;
    }
    const plate = this.#plates.get(name);
    if (plate === undefined) return;
    // The channel name, then a node's payload: every mark starts with SEP, which no channel name
    // holds. Anything else on a plate-wide channel is not a node's and is dropped.
    const at = payload.indexOf(SEP);
    if (at <= 0 || markAt(payload, at) < 0) return;
    const channel = payload.slice(0, at) as ChannelName;
    let messages: readonly Message[] | undefined;
    for (const { matches, listeners } of plate.patterns.values()) {
      if (!matches(channel)) continue;
      messages ??= this.#decode(name, plate.plateId, channel, payload.slice(at));
      for (const message of messages) deliver(listeners, message);
    }
  }

  /**
   * The messages of `payload` (one, or a run published together: `BATCH_MARK`), heard on `name`,
   * of `plateId`'s `channel`, in order; what is not a node's message in a batch is dropped.
   */
  #decode(name: string, plateId: PlateId, channel: ChannelName, payload: string): readonly Message[] {
    if (channel === this.#lastChannel && plateId === this.#lastPlate && payload === this.#lastPayload && !this.#lastNames.includes(name)) {
      this.#lastNames.push(name);
      return this.#lastMessages;
    }
    const mark = markAt(payload);
    let messages: Message[];
    if (mark === 4) {
      messages = decodeBatch(plateId, channel, payload);
    } else if (mark >= 0) {
      const message = decodeNodePayload(plateId, channel, payload);
      messages = message === undefined ? [] : [message];
    } else {
      // Published straight into Redis by a backend: JSON when it parses, else a string. It carries no
      // id or time, so each receiving node gives it its own.
      messages = [
        {
          plateId,
          channel,
          id: this.#options.newMessageId(),
          timestamp: new Date().toISOString(),
          body: bodyFromForeignPayload(payload),
        },
      ];
    }
    this.#lastPlate = plateId;
    this.#lastChannel = channel;
    this.#lastPayload = payload;
    this.#lastMessages = messages;
    this.#lastNames.length = 0;
    this.#lastNames.push(name);
    return messages;
  }

  #update(): void {
    const ready = !this.#closed && this.#delivery.ready && this.#commands.status === "ready";
    if (ready === this.#ready) return;
    this.#ready = ready;
    if (!ready) this.#options.warn?.("redis broker not ready");
    for (const listener of this.#readyListeners) listener(ready);
  }
}

/** Hands `message` to each listener; one that throws cannot stop the others. */
function deliver(listeners: ReadonlySet<MessageListener>, message: Message): void {
  for (const listener of listeners) {
    try {
      listener(message);
    } catch {
      // A listener must not throw (see MessageListener).
    }
  }
}

/** `broker_unavailable`, saying what Redis refused (OOM, READONLY, ...) or that it could not be reached. */
function unavailable(cause?: unknown, refusal?: RedisRefusal): PlateError {
  const what = refusal?.what ?? "Redis is unreachable";
  return new PlateError("broker_unavailable", `${what}; nothing was published, retry shortly.`, {
    retryAfterS: 1,
    cause,
  });
}

/** A message listener that does nothing (presence listens to a channel only for its changes). */
function ignore(): void {}
