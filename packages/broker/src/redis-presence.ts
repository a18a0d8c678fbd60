import type { ChannelName, PlateId } from "@plate/protocol";
import type { Commands, Warn } from "@plate/redis";
import type { Unsubscribe } from "./broker.js";
import type { RedisNames } from "./redis-names.js";
import type { Presence, PresenceChange, PresenceListener, PresenceState, PresenceTimes, Tracked } from "./presence.js";

/*
 * Presence on Redis. Keys (prefix `p`, plate `a` as the hash tag `{a}`, channel `c`):
 *   p + "presence:{a}:" + c       hash  client id → record (JSON text)
 *   p + "presence-version:{a}"    string the plate's last change version (INCR)
 *   p + "presence-leases"         zset  node id → when its lease ends (ms, Redis' clock)
 *   p + "presence-node:" + node   set   "plate SEP channel SEP client id" of every member a node tracks,
 *                                       and "plate SEP channel" of every channel it has subscribers of
 *   p + "occupancy:{a}:" + c      set   the nodes that have subscribers of a channel (idempotent: a
 *                                       node counted twice is one member)
 * A change is published by its own script, on the channel's pub/sub channel (the one its messages
 * use: a node with a subscriber there already listens), as `MARK version SEP joins SEP leaves`.
 * Publishing from the script that made the change keeps the changes of a channel in version order.
 *
 * A node renews its lease every `leaseMs / 3` while it tracks members or listens. Every such node
 * looks for expired leases every `sweepMs` and removes those nodes' members (each removal is a
 * change, told as any untrack is). A node that finds its own lease had expired (it was cut from
 * Redis longer than the lease) tracks its members again.
 */

/** Starts a presence change on a channel's pub/sub channel (no message payload starts so: see redis-broker.ts). */
export const PRESENCE_MARK = "\u001fPR\u001f";
const SEP = "\u001f";
/** Members removed per call while sweeping a dead node. */
const SWEEP_BATCH = 200;
/** Expired leases handled per sweep. */
const SWEEP_NODES = 16;

/** KEYS: members, version. ARGV: client id, record, max members, publish command, pub/sub channel, mark, SEP. */
const TRACK = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local v = redis.call('INCR', KEYS[2])
local key = '{"' .. ARGV[1] .. '":'
local leaves = '{}'
if old then leaves = key .. old .. '}' end
redis.call(ARGV[4], ARGV[5], ARGV[6] .. v .. ARGV[7] .. key .. ARGV[2] .. '}' .. ARGV[7] .. leaves)
if old then return {v, 0} end
return {v, 1}
`;

/** KEYS: members, version. ARGV: client id, publish command, pub/sub channel, mark, SEP. Answers 0 or {version, old record}. */
const UNTRACK = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local v = redis.call('INCR', KEYS[2])
redis.call(ARGV[2], ARGV[3], ARGV[4] .. v .. ARGV[5] .. '{}' .. ARGV[5] .. '{"' .. ARGV[1] .. '":' .. old .. '}')
return {v, old}
`;

/** KEYS: members, version. Answers {version, [client id, record, ...]} read at one instant. */
const STATE = `
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
`;

/**
 * KEYS: a channel's occupancy. ARGV: node id, "1" (it has subscribers) or "0" (it has none left).
 * Answers 1 when the channel changed: the first node came (occupied), or the last left (vacant).
 */
const OCCUPY = `
if ARGV[2] == '1' then
  if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then return 1 end
  return 0
end
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
return 0
`;

/** KEYS: leases. ARGV: node id, lease ms. Renews; answers 1 when the lease was missing or had expired. */
const RENEW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if (not old) or tonumber(old) < now then return 1 end
return 0
`;

/** KEYS: leases. ARGV: how many. The nodes whose lease has ended. */
const EXPIRED = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1, 'LIMIT', 0, tonumber(ARGV[1]))
`;

/** KEYS: leases, the node's set. ARGV: node id. Forgets a swept node unless it came back meanwhile. */
const FORGET = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) >= now then return 0 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
`;

export interface PresenceScripts {
  platePresenceTrack(...keysAndArgs: (string | number)[]): Promise<number | [number, number]>;
  platePresenceUntrack(...keysAndArgs: string[]): Promise<0 | [number, string]>;
  platePresenceState(members: string, version: string): Promise<[string, string[]]>;
  platePresenceOccupy(occupancy: string, nodeId: string, has: "1" | "0"): Promise<number>;
  platePresenceRenew(leases: string, nodeId: string, leaseMs: number): Promise<number>;
  platePresenceExpired(leases: string, count: number): Promise<string[]>;
  platePresenceForget(leases: string, index: string, nodeId: string): Promise<number>;
}

/** `redis` with the presence scripts defined (sent as EVALSHA, loaded on first use). */
export function withPresenceScripts<C extends Commands>(redis: C): C & PresenceScripts {
  redis.defineCommand("platePresenceTrack", { numberOfKeys: 2, lua: TRACK });
  redis.defineCommand("platePresenceUntrack", { numberOfKeys: 2, lua: UNTRACK });
  redis.defineCommand("platePresenceState", { numberOfKeys: 2, lua: STATE });
  redis.defineCommand("platePresenceOccupy", { numberOfKeys: 1, lua: OCCUPY });
  redis.defineCommand("platePresenceRenew", { numberOfKeys: 1, lua: RENEW });
  redis.defineCommand("platePresenceExpired", { numberOfKeys: 1, lua: EXPIRED });
  redis.defineCommand("platePresenceForget", { numberOfKeys: 2, lua: FORGET });
  return redis as C & PresenceScripts;
}

/** What the Redis broker lends its presence. */
export interface RedisPresenceParts {
  /** The command connection when a command sent now goes out; throws `broker_unavailable` otherwise. */
  readonly commands: () => Commands & PresenceScripts;
  readonly names: RedisNames;
  /** PUBLISH, or SPUBLISH on a cluster. */
  readonly publishCommand: string;
  readonly nodeId: string;
  readonly times: PresenceTimes;
  /** Subscribes this node to a channel's pub/sub channel (the broker's `subscribe`, ignoring its messages). */
  readonly join: (plateId: PlateId, channel: ChannelName) => Promise<Unsubscribe>;
  /** Turns a failed command into the broker's `broker_unavailable`. */
  readonly failed: (err: unknown) => Error;
  readonly warn: Warn;
}

/** A member this node tracks, to track again if its lease ran out. */
interface Member {
  readonly plateId: PlateId;
  readonly channel: ChannelName;
  readonly clientId: string;
  readonly record: string;
  readonly maxMembers: number;
}

export class RedisPresence implements Presence {
  readonly #parts: RedisPresenceParts;
  /** Listeners by pub/sub channel name. */
  readonly #listeners = new Map<string, Set<PresenceListener>>();
  /** This node's members, by their entry in its set. */
  readonly #tracked = new Map<string, Member>();
  readonly #sweptListeners = new Set<(plateId: PlateId, channel: ChannelName, clientId: string, record: string) => void>();
  readonly #vacatedListeners = new Set<(plateId: PlateId, channel: ChannelName) => void>();
  /** The channels this node counts itself in (to count again if its lease ran out). */
  readonly #occupied = new Set<string>();
  #timers: NodeJS.Timeout[] | undefined;
  #sweeping = false;
  /** Whether a renewal has succeeded (the first one makes the lease). */
  #renewed = false;
  #closed = false;

  constructor(parts: RedisPresenceParts) {
    this.#parts = parts;
  }

  async listen(plateId: PlateId, channel: ChannelName, listener: PresenceListener): Promise<Unsubscribe> {
    this.#start();
    const name = this.#parts.names.channel(plateId, channel);
    const delivery: PresenceListener = (change) => listener(change);
    let set = this.#listeners.get(name);
    if (set === undefined) this.#listeners.set(name, (set = new Set()));
    set.add(delivery);
    const forget = () => {
      set.delete(delivery);
      if (set.size === 0 && this.#listeners.get(name) === set) this.#listeners.delete(name);
    };
    let leave: Unsubscribe;
    try {
      leave = await this.#parts.join(plateId, channel);
    } catch (err) {
      forget();
      throw err;
    }
    return () => {
      forget();
      return leave();
    };
  }

  async track(plateId: PlateId, channel: ChannelName, clientId: string, record: string, maxMembers: number): Promise<Tracked | "full"> {
    this.#start();
    const entry = plateId + SEP + channel + SEP + clientId;
    const { names } = this.#parts;
    const commands = this.#commands();
    let reply: number | [number, number];
    try {
      // In the node's set first: a member is never in a channel without it (a dead node's sweep finds it).
      await commands.sadd(names.presenceNode(this.#parts.nodeId), entry);
      reply = await commands.platePresenceTrack(
        names.presenceMembers(plateId, channel),
        names.presenceVersion(plateId),
        clientId,
        record,
        maxMembers,
        this.#parts.publishCommand,
        names.channel(plateId, channel),
        PRESENCE_MARK,
        SEP,
      );
    } catch (err) {
      throw this.#parts.failed(err);
    }
    if (reply === 0 || !Array.isArray(reply)) {
      if (!this.#tracked.has(entry)) await this.#unindex(entry);
      return "full";
    }
    this.#tracked.set(entry, { plateId, channel, clientId, record, maxMembers });
    return { version: reply[0], joined: reply[1] === 1 };
  }

  async untrack(plateId: PlateId, channel: ChannelName, clientId: string): Promise<number> {
    const entry = plateId + SEP + channel + SEP + clientId;
    this.#tracked.delete(entry);
    let removed: 0 | [number, string];
    try {
      removed = await this.#remove(this.#commands(), plateId, channel, clientId);
    } catch (err) {
      throw this.#parts.failed(err);
    }
    await this.#unindex(entry);
    return removed === 0 ? 0 : removed[0];
  }

  async state(plateId: PlateId, channel: ChannelName): Promise<PresenceState> {
    this.#start();
    const { names } = this.#parts;
    let reply: [string, string[]];
    try {
      reply = await this.#commands().platePresenceState(names.presenceMembers(plateId, channel), names.presenceVersion(plateId));
    } catch (err) {
      throw this.#parts.failed(err);
    }
    const [version, flat] = reply;
    const members = new Map<string, string>();
    for (let i = 0; i + 1 < flat.length; i += 2) members.set(flat[i]!, flat[i + 1]!);
    return { version: Number(version), members };
  }

  onSwept(listener: (plateId: PlateId, channel: ChannelName, clientId: string, record: string) => void): () => void {
    this.#sweptListeners.add(listener);
    return () => void this.#sweptListeners.delete(listener);
  }

  async occupy(plateId: PlateId, channel: ChannelName): Promise<boolean> {
    this.#start();
    const entry = plateId + SEP + channel;
    this.#occupied.add(entry);
    const { names } = this.#parts;
    try {
      const commands = this.#commands();
      // Both sent now, in order: a vacate that comes before they are answered is sent after them.
      const [, occupied] = await Promise.all([
        commands.sadd(names.presenceNode(this.#parts.nodeId), entry),
        commands.platePresenceOccupy(names.occupancy(plateId, channel), this.#parts.nodeId, "1"),
      ]);
      return occupied === 1;
    } catch (err) {
      throw this.#parts.failed(err);
    }
  }

  async vacate(plateId: PlateId, channel: ChannelName): Promise<boolean> {
    const entry = plateId + SEP + channel;
    if (!this.#occupied.delete(entry)) return false;
    let vacant: number;
    try {
      vacant = await this.#commands().platePresenceOccupy(this.#parts.names.occupancy(plateId, channel), this.#parts.nodeId, "0");
    } catch (err) {
      throw this.#parts.failed(err);
    }
    await this.#unindex(entry);
    return vacant === 1;
  }

  onVacated(listener: (plateId: PlateId, channel: ChannelName) => void): () => void {
    this.#vacatedListeners.add(listener);
    return () => void this.#vacatedListeners.delete(listener);
  }

  /** A payload with `PRESENCE_MARK` heard on `name` (from the broker's subscriber). */
  deliver(name: string, payload: string): void {
    const listeners = this.#listeners.get(name);
    if (listeners === undefined) return;
    const change = decodeChange(payload);
    if (change === undefined) return;
    for (const listener of listeners) {
      try {
        listener(change);
      } catch {
        // A listener must not throw; one that does cannot stop the others.
      }
    }
  }

  close(): void {
    this.#closed = true;
    for (const timer of this.#timers ?? []) clearInterval(timer);
    this.#listeners.clear();
  }

  /** Starts renewing this node's lease and sweeping others', at the first use of presence. */
  #start(): void {
    if (this.#timers !== undefined || this.#closed) return;
    const { leaseMs, sweepMs } = this.#parts.times;
    const renew = setInterval(() => void this.#renew(), Math.max(1, Math.floor(leaseMs / 3)));
    const sweep = setInterval(() => void this.#sweep(), sweepMs);
    renew.unref();
    sweep.unref();
    this.#timers = [renew, sweep];
    void this.#renew();
  }

  async #renew(): Promise<void> {
    const { names, nodeId, times } = this.#parts;
    try {
      const lapsed = await this.#commands().platePresenceRenew(names.presenceLeases(), nodeId, times.leaseMs);
      // The first renewal makes the lease (it was missing): nothing was removed before it.
      const first = !this.#renewed;
      this.#renewed = true;
      if (lapsed === 1 && !first && (this.#tracked.size > 0 || this.#occupied.size > 0)) await this.#trackAgain();
    } catch (err) {
      // Redis is unreachable: the next renewal tries again (and tracks again if the lease lapsed).
      this.#parts.warn("presence lease not renewed", { error: String(err) });
    }
  }

  /** Tracks this node's members again after its lease lapsed (another node may have removed them). */
  async #trackAgain(): Promise<void> {
    const { names } = this.#parts;
    const commands = this.#commands();
    for (const entry of [...this.#occupied]) {
      // Vacated meanwhile: not counted again.
      if (!this.#occupied.has(entry)) continue;
      const [plateId, channel] = entry.split(SEP) as [PlateId, ChannelName];
      await commands.sadd(names.presenceNode(this.#parts.nodeId), entry);
      await commands.platePresenceOccupy(names.occupancy(plateId, channel), this.#parts.nodeId, "1");
    }
    for (const [entry, m] of [...this.#tracked]) {
      if (this.#tracked.get(entry) !== m) continue;
      await commands.sadd(names.presenceNode(this.#parts.nodeId), entry);
      await commands.platePresenceTrack(
        names.presenceMembers(m.plateId, m.channel),
        names.presenceVersion(m.plateId),
        m.clientId,
        m.record,
        m.maxMembers,
        this.#parts.publishCommand,
        names.channel(m.plateId, m.channel),
        PRESENCE_MARK,
        SEP,
      );
    }
  }

  /** Removes the members of nodes whose lease has ended; one sweep at a time on this node. */
  async #sweep(): Promise<void> {
    if (this.#sweeping || this.#closed) return;
    this.#sweeping = true;
    const { names } = this.#parts;
    try {
      const commands = this.#commands();
      const dead = await commands.platePresenceExpired(names.presenceLeases(), SWEEP_NODES);
      for (const nodeId of dead) {
        if (nodeId === this.#parts.nodeId) continue;
        const index = names.presenceNode(nodeId);
        for (;;) {
          const entries = await commands.srandmember(index, SWEEP_BATCH);
          if (entries.length === 0) break;
          for (const entry of entries) {
            const [plateId, channel, clientId] = entry.split(SEP) as [PlateId, ChannelName, string | undefined];
            if (clientId === undefined) {
              // A channel the dead node had subscribers of.
              if ((await commands.platePresenceOccupy(names.occupancy(plateId, channel), nodeId, "0")) === 1) {
                for (const listener of this.#vacatedListeners) listener(plateId, channel);
              }
              continue;
            }
            const removed = await this.#remove(commands, plateId, channel, clientId);
            if (removed !== 0) for (const listener of this.#sweptListeners) listener(plateId, channel, clientId, removed[1]);
          }
          await commands.srem(index, ...entries);
        }
        await commands.platePresenceForget(names.presenceLeases(), index, nodeId);
      }
    } catch (err) {
      this.#parts.warn("presence sweep failed; trying again", { error: String(err) });
    } finally {
      this.#sweeping = false;
    }
  }

  #remove(commands: Commands & PresenceScripts, plateId: PlateId, channel: ChannelName, clientId: string): Promise<0 | [number, string]> {
    const { names } = this.#parts;
    return commands.platePresenceUntrack(
      names.presenceMembers(plateId, channel),
      names.presenceVersion(plateId),
      clientId,
      this.#parts.publishCommand,
      names.channel(plateId, channel),
      PRESENCE_MARK,
      SEP,
    );
  }

  /** Takes an entry out of this node's set; best effort (a leftover entry is swept as a no-op). */
  async #unindex(entry: string): Promise<void> {
    try {
      await this.#commands().srem(this.#parts.names.presenceNode(this.#parts.nodeId), entry);
    } catch {
      // Harmless: removing a member that is not there changes nothing.
    }
  }

  #commands(): Commands & PresenceScripts {
    return this.#parts.commands();
  }
}

/** `MARK version SEP joins SEP leaves` as a change; undefined for anything else. */
function decodeChange(payload: string): PresenceChange | undefined {
  const first = payload.indexOf(SEP, PRESENCE_MARK.length);
  const second = first < 0 ? -1 : payload.indexOf(SEP, first + 1);
  if (second < 0) return undefined;
  const version = Number(payload.slice(PRESENCE_MARK.length, first));
  if (!Number.isSafeInteger(version) || version <= 0) return undefined;
  return { version, joins: payload.slice(first + 1, second), leaves: payload.slice(second + 1) };
}
