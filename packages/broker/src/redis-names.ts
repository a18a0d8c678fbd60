import type { ChannelName, PlateId, Topic } from "@plate/protocol";

/**
 * Redis channel names of Plate's topics, and the wire format of a message inside Redis.
 *
 * A channel `c` of plate `p` is the Redis channel `{prefix}{p}:{c}` — with the default prefix,
 * `plate:acme:user:42`. That is also the channel a backend may `PUBLISH` into directly. A plate id
 * never holds `:` (`[A-Za-z0-9_-]`), so the first `:` after the prefix ends the plate id: no name
 * of one plate can be read as another plate's, and a pattern `{prefix}{p}:…` cannot match another
 * plate's channels (it needs `{p}:` literally). Internal channels (the probe) use a `.` where a
 * plate id would stand, which no plate id holds.
 */

/** Characters Redis' glob matcher gives a meaning to (`stringmatchlen`): escaped in every literal. */
const GLOB_SPECIAL = /[*?[\]\\^]/g;

/** `text` as a Redis glob that matches exactly `text`. */
export function escapeGlob(text: string): string {
  return text.replace(GLOB_SPECIAL, "\\$&");
}

/**
 * A Plate pattern (`*` any run, `?` one character, everything else literal) as a Redis glob with
 * the same meaning. Only `*` and `?` keep their meaning; every other glob character is escaped,
 * so no client input can widen a pattern (validation already refuses them; this does not rely on it).
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

/** Names of one deployment's channels in Redis, under a key prefix. */
export class RedisNames {
  readonly #prefix: string;
  readonly #globPrefix: string;

  constructor(prefix: string) {
    this.#prefix = prefix;
    this.#globPrefix = escapeGlob(prefix);
  }

  /** The Redis channel a message of `plateId`'s `channel` is published to. */
  channel(plateId: PlateId, channel: ChannelName): string {
    return this.#prefix + plateId + ":" + channel;
  }

  /** What the node SUBSCRIBEs (a channel) or PSUBSCRIBEs (a glob) to for `topic`. */
  subscription(topic: Topic): string {
    return topic.pattern
      ? this.#globPrefix + escapeGlob(topic.plateId) + ":" + patternToGlob(topic.channel)
      : this.channel(topic.plateId, topic.channel);
  }

  /** The probe channel of one node (see the silent-loss guard). */
  probe(nodeId: string): string {
    return this.#prefix + ".probe." + nodeId;
  }

  /** The channel of node-to-node notes sent to `address` (see `Broker.send`). */
  node(address: string): string {
    return this.#prefix + ".node." + address;
  }

  /** Keys of a channel's history (see redis-history.ts). */
  historyKeys(plateId: PlateId, channel: ChannelName): [epoch: string, head: string, stream: string, marks: string] {
    const p = this.#prefix;
    return [p + "epoch", p + "history-head:" + plateId, p + "history:" + plateId + ":" + channel, p + "history-marks:" + plateId + ":" + channel];
  }

  /** The key remembering the publish of one owner's idempotency key (`name`: see idempotencyName). */
  idempotency(plateId: PlateId, name: string): string {
    return this.#prefix + "idem:" + plateId + ":" + name;
  }

  /** The plate and channel a Redis channel name stands for; undefined for a name that is not one. */
  parse(redisChannel: string): { plateId: PlateId; channel: ChannelName } | undefined {
    if (!redisChannel.startsWith(this.#prefix)) return undefined;
    const colon = redisChannel.indexOf(":", this.#prefix.length);
    if (colon < 0) return undefined;
    return {
      plateId: redisChannel.slice(this.#prefix.length, colon) as PlateId,
      channel: redisChannel.slice(colon + 1) as ChannelName,
    };
  }
}
