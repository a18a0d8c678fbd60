import type { ChannelName, PlateId } from "@plate/protocol";
import { checkKeyPrefix } from "@plate/redis";

/**
 * Redis names of Plate's channels and history keys.
 *
 * Every key and pub/sub channel of one plate carries the plate id as a Redis Cluster hash tag
 * (`{acme}`), so on a cluster they all live in one hash slot: every script stays single-slot and
 * the plate-wide guarantees (ids, resume, idempotency) keep their meaning. A plate id never holds
 * `:`, `{` or `}` (`[A-Za-z0-9_-]`), and `REDIS_KEY_PREFIX` may hold no brace, so the first `{` of
 * a name is always the plate's.
 *
 * Pub/sub channels (prefix `p`, plate `a`, channel `c`):
 *   one Redis:    `p a : c`     e.g. `plate:acme:user:42`    (PUBLISH; a backend may PUBLISH there)
 *   Redis Cluster `p {a} : c`   e.g. `plate:{acme}:user:42`  (SPUBLISH, a shard channel)
 *   plate-wide:   `p a #` / `p {a} #`: every message of the plate again, its channel name put before
 *                 the payload. Nodes with pattern subscribers of the plate listen there and match the
 *                 pattern themselves, so no PSUBSCRIBE taxes every publish of every plate.
 * The first `:` after the plate id ends it, so no name of one plate can be read as another plate's;
 * internal channels (probes, notes) put a `.` where a plate id would stand, which no plate id holds.
 */

/** Characters Redis' glob matcher gives a meaning to (`stringmatchlen`): escaped in every literal. */
const GLOB_SPECIAL = /[*?[\]\\^]/g;

/** `text` as a Redis glob that matches exactly `text`. */
export function escapeGlob(text: string): string {
  return text.replace(GLOB_SPECIAL, "\\$&");
}

/**
 * A Plate pattern (`*` any run, `?` one character, everything else literal) as a Redis glob with
 * the same meaning: only `*` and `?` keep their meaning. (Nodes match patterns themselves now; this
 * stays for operators who `PSUBSCRIBE` to watch a plate's traffic.)
 */
export function patternToGlob(pattern: string): string {
  let glob = "";
  for (const ch of pattern) {
    if (ch === "*" || ch === "?") glob += ch;
    else if (ch === "[" || ch === "]" || ch === "\\" || ch === "^") glob += "\\" + ch;
    else glob += ch;
  }
  return glob;
}

/** Ends the plate part of a plate-wide channel (no plate id or channel name holds it). */
const PLATE_WIDE = "#";

/** Names of one deployment's channels and keys in Redis, under a key prefix. */
export class RedisNames {
  readonly #prefix: string;
  readonly #sharded: boolean;

  /** `sharded`: names for Redis Cluster's shard channels (the plate id in braces). */
  constructor(prefix: string, sharded = false) {
    checkKeyPrefix(prefix);
    this.#prefix = prefix;
    this.#sharded = sharded;
  }

  /** The Redis channel a message of `plateId`'s `channel` is published to. */
  channel(plateId: PlateId, channel: ChannelName): string {
    return this.channelPrefix(plateId) + channel;
  }

  /** What goes before a channel name of `plateId` to make its Redis channel (see `channel`). */
  channelPrefix(plateId: PlateId): string {
    return this.#plate(plateId) + ":";
  }

  /** The plate-wide channel: every message of the plate, for nodes with pattern subscribers. */
  plateWide(plateId: PlateId): string {
    return this.#plate(plateId) + PLATE_WIDE;
  }

  /** The probe channel of one node; on a cluster, `slotTag` puts it in a slot of one master. */
  probe(nodeId: string, slotTag?: string): string {
    return this.#prefix + ".probe." + nodeId + (slotTag === undefined ? "" : "{" + slotTag + "}");
  }

  /** The channel of node-to-node notes sent to `address` (see `Broker.send`). */
  node(address: string): string {
    return this.#prefix + ".node." + (this.#sharded ? "{" + address + "}" : address);
  }

  /** Keys of a channel's history (see redis-history.ts): the plate's, then the channel's own. */
  historyKeys(plateId: PlateId, channel: ChannelName): [epoch: string, head: string, stream: string, marks: string] {
    return [...this.plateHistoryKeys(plateId), ...this.channelHistoryKeys(plateId, channel)];
  }

  /** The keys of a plate's history shared by its channels: its epoch and its head. */
  plateHistoryKeys(plateId: PlateId): [epoch: string, head: string] {
    const tag = "{" + plateId + "}";
    return [this.#prefix + "epoch:" + tag, this.#prefix + "history-head:" + tag];
  }

  /** The keys of one channel's history: its stream and its marks. */
  channelHistoryKeys(plateId: PlateId, channel: ChannelName): [stream: string, marks: string] {
    const tag = "{" + plateId + "}:" + channel;
    return [this.#prefix + "history:" + tag, this.#prefix + "history-marks:" + tag];
  }

  /** Marks a batch that had a message refused (see `PublishRequest.batch`); `""`: no batch. */
  batch(plateId: PlateId, batch: string): string {
    return this.#prefix + "batch:{" + plateId + "}:" + batch;
  }

  /**
   * A plate's publish state (a hash: its rate buckets and history budget counts), its channels'
   * history sizes (a hash), last publishes (a zset) and idempotency keys (a zset), shared by every
   * node (see redis-history.ts).
   */
  publishState(plateId: PlateId): [state: string, sizes: string, published: string, idempotencyKeys: string] {
    const p = this.#prefix;
    const tag = "{" + plateId + "}";
    return [p + "publish-state:" + tag, p + "history-sizes:" + tag, p + "history-published:" + tag, p + "idem-keys:" + tag];
  }

  /** The key remembering the publish of one owner's idempotency key (`name`: see idempotencyName). */
  idempotency(plateId: PlateId, name: string): string {
    return this.#prefix + "idem:{" + plateId + "}:" + name;
  }

  /** The members of a channel (see redis-presence.ts). */
  presenceMembers(plateId: PlateId, channel: ChannelName): string {
    return this.#prefix + "presence:{" + plateId + "}:" + channel;
  }

  /** The version of a plate's last presence change. */
  presenceVersion(plateId: PlateId): string {
    return this.#prefix + "presence-version:{" + plateId + "}";
  }

  /** The nodes that have subscribers of a channel. */
  occupancy(plateId: PlateId, channel: ChannelName): string {
    return this.#prefix + "occupancy:{" + plateId + "}:" + channel;
  }

  /** Every node's presence lease. */
  presenceLeases(): string {
    return this.#prefix + "presence-leases";
  }

  /** The members one node tracks. */
  presenceNode(nodeId: string): string {
    return this.#prefix + "presence-node:" + nodeId;
  }

  /** The plate and channel a Redis channel name stands for; undefined for a name that is not one. */
  parse(redisChannel: string): { plateId: PlateId; channel: ChannelName } | undefined {
    if (!redisChannel.startsWith(this.#prefix)) return undefined;
    const colon = redisChannel.indexOf(":", this.#prefix.length);
    if (colon < 0) return undefined;
    let plateId = redisChannel.slice(this.#prefix.length, colon);
    if (this.#sharded) {
      if (plateId.length < 3 || plateId[0] !== "{" || plateId[plateId.length - 1] !== "}") return undefined;
      plateId = plateId.slice(1, -1);
    }
    return { plateId: plateId as PlateId, channel: redisChannel.slice(colon + 1) as ChannelName };
  }

  #plate(plateId: PlateId): string {
    return this.#prefix + (this.#sharded ? "{" + plateId + "}" : plateId);
  }
}
