import { PlateError, readJsonObject, topicKey } from "@plate/protocol";
import type { ChannelName, PlateId, Topic } from "@plate/protocol";
import type { Broker, PresenceChange, Tracked, Unsubscribe } from "@plate/broker";
import type { Logger } from "../log.js";
import type { Connection } from "./connection.js";
import { SharedFrame } from "./outbound.js";
import type { Subscription } from "./subscription.js";
import type { Webhooks } from "./webhooks.js";

/** Settings of presence (see config.ts). */
export interface PresenceLimits {
  /** `PRESENCE_MAX_MEMBERS`: members one channel may have (the node's; a plate's own comes from `membersOf`). */
  readonly maxMembers: number;
  /** A plate's `PRESENCE_MAX_MEMBERS` in force, when plates have their own limits. */
  readonly membersOf?: (plateId: PlateId) => Promise<number>;
  /** `PRESENCE_MAX_STATE_BYTES`: the JSON of one member's state. */
  readonly maxStateBytes: number;
}

/**
 * Changes held for one subscription while its first state is read (one broker round trip); a
 * channel busier than this in that time ends the connection as a slow consumer.
 */
const MAX_PENDING_CHANGES = 10_000;

/** A subscription made with `presence:true`: the version its client is at, or the changes held until its state is read. */
interface Watcher {
  readonly sub: Subscription;
  version: number;
  pending: PresenceChange[] | undefined;
}

/** This node's watchers of one channel, and its broker listener. */
interface Watched {
  readonly plateId: PlateId;
  readonly channel: ChannelName;
  readonly watchers: Set<Watcher>;
  readonly listening: Promise<Unsubscribe>;
}

/**
 * One connection's membership of one channel, for as long as its subscription there lasts (so a
 * client that tracks and untracks again and again adds nothing).
 */
interface Membership {
  readonly sub: Subscription;
  /** Its user (a signed token's `sub`), for the webhook's member events. */
  user: string | undefined;
  joinedAt: string;
  /** Whether it is a member: a track on its way or done, and no untrack since. */
  live: boolean;
}

/**
 * Route 10 on this node: a connection's memberships (`track`, `untrack`, and leaving when it
 * unsubscribes or ends), and the presence frames of `presence:true` subscriptions: the state once,
 * then each change after it, in version order, each serialized once for every watcher on the node.
 * After a gap in the broker's delivery, watchers get the whole state again.
 */
export class PresenceHub {
  readonly #watched = new Map<string, Watched>();
  /** Memberships by connection, then channel. */
  readonly #members = new WeakMap<Connection, Map<ChannelName, Membership>>();

  constructor(
    private readonly broker: Broker,
    private readonly limits: PresenceLimits,
    private readonly log: Logger,
    /** Where member events go (route 10's channel events). */
    private readonly webhooks?: Pick<Webhooks, "emit">,
  ) {
    // A dead node's members, removed by this node's sweep: told once, from here.
    broker.presence.onSwept((plateId, channel, clientId, record) => void webhooks?.emit(plateId, "member_removed", channel, clientId, userOf(record)));
    broker.onGap((phase, plates) => {
      if (phase !== "restored") return;
      for (const watched of this.#watched.values()) {
        if (plates === undefined || plates.has(watched.plateId)) void this.#refill(watched);
      }
    });
  }

  /**
   * Sends the channel's members to a new `presence:true` subscription (`{"type":"presence",
   * "channel","state":{…}}`), then every change after them. Throws `broker_unavailable`.
   */
  async watch(sub: Subscription): Promise<void> {
    const { plateId, channel } = sub.topic as Topic & { pattern: false };
    const key = topicKey(sub.topic);
    let watched = this.#watched.get(key);
    if (watched === undefined) {
      const created: Watched = {
        plateId,
        channel,
        watchers: new Set(),
        listening: this.broker.presence.listen(plateId, channel, (change) => this.#onChange(created, change)),
      };
      watched = created;
      this.#watched.set(key, created);
      created.listening.catch(() => this.#watched.get(key) === created && this.#watched.delete(key));
    }
    const watcher: Watcher = { sub, version: 0, pending: [] };
    watched.watchers.add(watcher);
    const joined = watched;
    sub.onEnd(() => this.#unwatch(key, joined, watcher));
    try {
      await watched.listening;
      const state = await this.broker.presence.state(plateId, channel);
      if (sub.ended) return;
      sub.conn.frameShared(stateFrame(channel, state.members));
      watcher.version = state.version;
    } catch (err) {
      this.#unwatch(key, joined, watcher);
      throw err;
    }
    const held = watcher.pending ?? [];
    watcher.pending = undefined;
    for (const change of held) this.#tell(watcher, change, diffFrame(channel, change));
  }

  /**
   * Makes the connection a member of a channel it is subscribed to, with its state (JSON text) and
   * its user, or replaces its state. Throws `bad_request` (not subscribed), `payload_too_large`,
   * `quota_exceeded` (the channel is full), `broker_unavailable`.
   */
  async track(conn: Connection, channel: ChannelName, state: string, user: string | undefined): Promise<void> {
    // Read first, before anything changes: the rest of a track runs in one turn up to the broker's call.
    const maxMembers = (await this.limits.membersOf?.(conn.plateId)) ?? this.limits.maxMembers;
    const sub = conn.subscriptions.get(topicKey({ plateId: conn.plateId, pattern: false, channel }));
    if (sub === undefined) throw new PlateError("bad_request", "Subscribe to the channel before tracking presence there.");
    if (Buffer.byteLength(state) > this.limits.maxStateBytes) {
      throw new PlateError("payload_too_large", `A presence state is at most ${this.limits.maxStateBytes} bytes of JSON.`);
    }
    let memberships = this.#members.get(conn);
    if (memberships === undefined) this.#members.set(conn, (memberships = new Map<ChannelName, Membership>()));
    let membership = memberships.get(channel);
    if (membership === undefined || membership.sub !== sub) {
      const created: Membership = { sub, user, joinedAt: "", live: false };
      membership = created;
      memberships.set(channel, created);
      // It leaves when its subscription ends: unsubscribed, refused by a refresh, or with its connection.
      sub.onEnd(() => void this.#leave(conn, channel, created));
    }
    const wasLive = membership.live;
    membership.user = user;
    if (!wasLive) membership.joinedAt = new Date().toISOString();
    const record =
      "{" + (user === undefined ? "" : '"user":' + JSON.stringify(user) + ",") + '"state":' + state + ',"joinedAt":"' + membership.joinedAt + '"}';
    membership.live = true;
    let outcome: Tracked | "full";
    try {
      outcome = await this.broker.presence.track(conn.plateId, channel, conn.clientId, record, maxMembers);
    } catch (err) {
      membership.live = wasLive;
      throw err;
    }
    if (outcome === "full") {
      membership.live = wasLive;
      throw new PlateError("quota_exceeded", `A channel of this plate holds at most ${maxMembers} presence members.`);
    }
    // Queued before the client hears "ok": a node that dies after answering has already queued it.
    if (outcome.joined) await this.webhooks?.emit(conn.plateId, "member_added", channel, conn.clientId, user);
    // Its subscription ended while the track was on its way: take it back.
    if (sub.ended) await this.#leave(conn, channel, membership);
  }

  /** Ends the connection's membership of a channel (nothing if it had none). Throws `broker_unavailable`. */
  async untrack(conn: Connection, channel: ChannelName): Promise<void> {
    const membership = this.#members.get(conn)?.get(channel);
    if (membership === undefined || !membership.live) return;
    membership.live = false;
    let version: number;
    try {
      version = await this.broker.presence.untrack(conn.plateId, channel, conn.clientId);
    } catch (err) {
      membership.live = true;
      throw err;
    }
    if (version > 0) await this.webhooks?.emit(conn.plateId, "member_removed", channel, conn.clientId, membership.user);
  }

  /** The members of a channel (route 10's GET), as `{"clientId","user"?,"state","joinedAt"}` JSON texts. */
  async members(plateId: PlateId, channel: ChannelName): Promise<string[]> {
    const { members } = await this.broker.presence.state(plateId, channel);
    return [...members].map(([clientId, record]) => '{"clientId":"' + clientId + '",' + record.slice(1));
  }

  /** A membership's end when its subscription ends; a broker failure is logged (its lease removes it if the node dies). */
  async #leave(conn: Connection, channel: ChannelName, membership: Membership): Promise<void> {
    const memberships = this.#members.get(conn);
    if (memberships?.get(channel) === membership) memberships.delete(channel);
    if (!membership.live) return;
    membership.live = false;
    try {
      const version = await this.broker.presence.untrack(conn.plateId, channel, conn.clientId);
      if (version > 0) await this.webhooks?.emit(conn.plateId, "member_removed", channel, conn.clientId, membership.user);
    } catch (err) {
      this.log.warn("presence member not removed", { plateId: conn.plateId, error: String(err) });
    }
  }

  #onChange(watched: Watched, change: PresenceChange): void {
    let frame: SharedFrame | undefined;
    for (const watcher of watched.watchers) {
      if (watcher.pending !== undefined) {
        if (watcher.pending.length >= MAX_PENDING_CHANGES) watcher.sub.conn.end("slow_consumer");
        else watcher.pending.push(change);
        continue;
      }
      this.#tell(watcher, change, (frame ??= diffFrame(watched.channel, change)));
    }
  }

  /** A change to one watcher, unless its state already holds it. */
  #tell(watcher: Watcher, change: PresenceChange, frame: SharedFrame): void {
    if (change.version <= watcher.version || watcher.sub.ended) return;
    watcher.version = change.version;
    watcher.sub.conn.frameShared(frame);
  }

  /** After a gap: the whole state again to every watcher whose state is read (changes may have been missed). */
  async #refill(watched: Watched): Promise<void> {
    try {
      const state = await this.broker.presence.state(watched.plateId, watched.channel);
      const frame = stateFrame(watched.channel, state.members);
      for (const watcher of watched.watchers) {
        if (watcher.pending !== undefined || watcher.sub.ended) continue;
        watcher.version = state.version;
        watcher.sub.conn.frameShared(frame);
      }
    } catch (err) {
      this.log.warn("presence state not read again after a gap", { plateId: watched.plateId, error: String(err) });
    }
  }

  #unwatch(key: string, watched: Watched, watcher: Watcher): void {
    if (!watched.watchers.delete(watcher) || watched.watchers.size > 0 || this.#watched.get(key) !== watched) return;
    this.#watched.delete(key);
    watched.listening.then(
      (stop) => stop(),
      () => undefined,
    ).catch((err: unknown) => this.log.warn("presence listener not stopped", { error: String(err) }));
  }
}

/** `{"type":"presence","channel","state":{<clientId>:<record>,…}}`, by concatenation (ids and channels need no escaping). */
function stateFrame(channel: ChannelName, members: ReadonlyMap<string, string>): SharedFrame {
  let body = "";
  for (const [clientId, record] of members) body += (body === "" ? '"' : ',"') + clientId + '":' + record;
  return new SharedFrame("presence", '{"type":"presence","channel":"' + channel + '","state":{' + body + "}}");
}

function diffFrame(channel: ChannelName, change: PresenceChange): SharedFrame {
  return new SharedFrame("presence", '{"type":"presence","channel":"' + channel + '","joins":' + change.joins + ',"leaves":' + change.leaves + "}");
}

/** The user of a member's record, if it has one. */
function userOf(record: string): string | undefined {
  const user = readJsonObject(record)?.user;
  return typeof user === "string" ? user : undefined;
}
