import type { Cluster, Redis } from "ioredis";
import type { PlateId } from "@plate/protocol";
import { DeafnessProbe, SLOT_COUNT, closeConnection, keySlot, masterOf } from "@plate/redis";
import type { Warn } from "@plate/redis";
import type { GapPhase } from "./broker.js";

/*
 * How a Redis broker hears its pub/sub channels: one subscriber connection on one Redis
 * (`ClassicDelivery`: SUBSCRIBE), or one per cluster master that owns a slot the node listens to
 * (`ShardedDelivery`: SSUBSCRIBE). Both watch their connections with a deaf probe and tell the
 * broker when delivery was cut and restored, and for which plates.
 */

/** What a delivery tells its broker. */
export interface DeliveryEvents {
  /** A message arrived on `name`. */
  message(name: string, payload: string): void;
  /**
   * Delivery of the names of `plates` (undefined: every plate) was cut or is restored; see
   * `Broker.onGap`. Each `"restored"` follows a `"cut"` of the same plates.
   */
  gap(phase: GapPhase, plates: ReadonlySet<PlateId> | undefined): void;
  /** Whether the delivery is ready may have changed. */
  changed(): void;
  /** A probe did not come back in time (for a metric). */
  probeLost(): void;
}

/** The probe settings and where to report (the broker's options). */
export interface DeliverySettings {
  readonly probeIntervalMs: number;
  readonly probeTimeoutMs: number;
  readonly warn: Warn | undefined;
  /** Whether the node has anything to lose (probes are sent only then). */
  readonly wanted: () => boolean;
}

/** Hears a set of pub/sub names. */
export interface Delivery {
  /**
   * Starts hearing `name` (a channel of `plateId`; none for node-to-node notes). Resolves once
   * Redis confirmed it, or at once when the connection is down (it is subscribed with the rest
   * when back). Rejects, forgetting the name, when Redis refused it.
   */
  add(name: string, plateId: PlateId | undefined): Promise<void>;
  /** Stops hearing `name`. */
  remove(name: string): Promise<void>;
  /** Whether messages are heard now (connected, subscribed, not found deaf). */
  readonly ready: boolean;
  close(): Promise<void>;
}

/**
 * One subscriber connection on one Redis (standalone, or the primary Sentinel names).
 *
 * - After every (re)connect it subscribes again to the probe and every name, then says
 *   `"restored"` (after the first time).
 * - `"cut"` comes when the connection closes or the probe is lost, before anything the restored
 *   connection brings: Redis sends a message published right after a SUBSCRIBE in the same read as
 *   its answer, and ioredis hands it out before the answer's promise lets the resubscription go on.
 */
export class ClassicDelivery implements Delivery {
  readonly #names = new Set<string>();
  readonly #subscriber: Redis;
  readonly #events: DeliveryEvents;
  readonly #settings: DeliverySettings;
  readonly #probeChannel: string;
  readonly #probe: DeafnessProbe;
  #subscribedOnce = false;
  #subscribed = false;
  #deaf = false;
  #closed = false;

  constructor(subscriber: Redis, probeChannel: string, publish: (channel: string, payload: string) => Promise<unknown>, settings: DeliverySettings, events: DeliveryEvents) {
    this.#subscriber = subscriber;
    this.#events = events;
    this.#settings = settings;
    this.#probeChannel = probeChannel;
    subscriber.on("ready", () => void this.#resubscribe());
    subscriber.on("close", () => this.#cut());
    subscriber.on("error", () => undefined);
    subscriber.on("message", (channel: string, payload: string) => {
      if (channel === this.#probeChannel) this.#probe.returned(payload);
      else events.message(channel, payload);
    });
    this.#probe = new DeafnessProbe({
      intervalMs: settings.probeIntervalMs,
      timeoutMs: settings.probeTimeoutMs,
      wanted: () => this.#subscribed && settings.wanted(),
      publish: (payload) => publish(this.#probeChannel, payload),
      lost: () => this.#probeLost(),
    });
  }

  get ready(): boolean {
    return !this.#closed && !this.#deaf && this.#subscribed;
  }

  async add(name: string): Promise<void> {
    this.#names.add(name);
    // While the subscriber is down, #resubscribe subscribes it with the rest when it is back.
    if (this.#subscriber.status !== "ready") return;
    try {
      await this.#subscriber.subscribe(name);
    } catch (err) {
      if (this.#subscriber.status !== "ready") return;
      this.#names.delete(name);
      throw err;
    }
  }

  async remove(name: string): Promise<void> {
    if (!this.#names.delete(name)) return;
    // A later add of the same name sends its SUBSCRIBE after this UNSUBSCRIBE on the same
    // connection; Redis applies them in order, so that newcomer is never left deaf.
    await this.#subscriber.unsubscribe(name).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#probe.stop();
    this.#names.clear();
    await closeConnection(this.#subscriber);
  }

  async #resubscribe(): Promise<void> {
    try {
      await this.#subscriber.subscribe(this.#probeChannel, ...this.#names);
    } catch (err) {
      this.#settings.warn?.("redis resubscribe failed; reconnecting", { error: String(err) });
      this.#subscriber.disconnect(true);
      return;
    }
    this.#subscribed = true;
    this.#deaf = false;
    this.#events.changed();
    if (this.#subscribedOnce) this.#events.gap("restored", undefined);
    this.#subscribedOnce = true;
  }

  #cut(): void {
    if (this.#subscribed) this.#events.gap("cut", undefined);
    this.#subscribed = false;
    this.#events.changed();
  }

  #probeLost(): void {
    if (this.#closed) return;
    this.#settings.warn?.("redis subscriber is deaf (probe lost); reconnecting it", { probeTimeoutMs: this.#settings.probeTimeoutMs });
    this.#events.probeLost();
    this.#deaf = true;
    this.#cut();
    this.#subscriber.disconnect(true);
  }
}

/**
 * The wait, in ms, before the slot map is read again when a read after Redis dropped a name (its
 * slot left the master) still places the name on that master: the read may have been answered by
 * a node not yet told of the move, or have started before it (a read in flight takes the place of
 * the one asked for). Until the map moves it, the name's plate stays cut, and what is published
 * meanwhile is read from the history once it is subscribed where its slot went.
 */
export const DROPPED_REREAD_MS = 100;

/**
 * Reads of the slot map, after Redis dropped a name, that may still place it on the master that
 * dropped it; after that many, the name is subscribed there again (the slot came back, or that
 * master's MOVED moves it).
 */
export const DROPPED_REREADS = 20;

/**
 * The shard channel an unsolicited `sunsubscribe` names, from the error ioredis reports it with (a
 * reply no command waited for: "... Last reply: sunsubscribe,<channel>,<count>"); undefined for any
 * other error.
 */
export function droppedShardChannel(message: string): string | undefined {
  const marker = "Last reply: sunsubscribe,";
  const at = message.indexOf(marker);
  if (at < 0) return undefined;
  const rest = message.slice(at + marker.length);
  const comma = rest.lastIndexOf(",");
  return comma <= 0 ? undefined : rest.slice(0, comma);
}

/** A name the sharded delivery hears: its plate, slot, and the master it is subscribed on. */
interface Wanted {
  readonly plateId: PlateId | undefined;
  readonly slot: number;
  /** The link it belongs to now (its slot's master when it was placed). */
  link: Link | undefined;
  /** Wakes the `add` waiting on it, when the slot map moves it to another link. */
  moved: (() => void) | undefined;
}

/** One subscriber connection to one cluster master. */
interface Link {
  readonly nodeKey: string;
  readonly redis: Redis;
  readonly names: Set<string>;
  /** Its probe channel (in a slot of this master when it last subscribed), and its probe. */
  probeChannel: string;
  readonly probe: DeafnessProbe;
  /** Subscribed to its names on its current connection, and not found deaf. */
  subscribed: boolean;
  /** The names whose delivery this link cut; they are told "restored" once subscribed again. */
  readonly cut: Set<string>;
  /** Names Redis unsubscribed unasked (their slot left this master), until the slot map moves them. */
  readonly dropped: Set<string>;
  /**
   * Whether it was ever subscribed; until then `opened` settles when it is, or fails when it cannot
   * connect or is dropped (its names moved to other masters' links).
   */
  everSubscribed: boolean;
  readonly opened: Promise<void>;
  /** Fails `opened` (once settled, does nothing). */
  readonly abandon: (err: Error) => void;
}

/**
 * Redis Cluster's sharded pub/sub: one subscriber connection per master that owns a slot of a name
 * the node hears, SSUBSCRIBEd to those names (all of one plate share a slot: one hash tag).
 *
 * ioredis' own cluster subscribers were not used: measured, they resubscribe silently (no gap is
 * told, so nothing is filled), loop on slot-map refreshes after a master dies, and lose the first
 * message after a slot moves. Here:
 * - a link's connection closing, or its probe (a shard channel in one of its master's slots) not
 *   coming back, cuts delivery for the plates of that link only; its names are subscribed again
 *   where their slots now live (after a failover, the promoted replica), then `"restored"`;
 * - the slot map is compared with where each name is subscribed after every refresh of the
 *   cluster client (after MOVED, a failover, and every `slotsRefreshMs`): a name whose slot moved
 *   is cut, subscribed at its new master, then restored, so a live slot migration loses nothing
 *   silently (the history fills what was published meanwhile);
 * - a master that is down makes only its plates' subscriptions fail (`add` rejects); the others
 *   go on.
 */
export class ShardedDelivery implements Delivery {
  readonly #cluster: Cluster;
  readonly #connect: (nodeKey: string) => Redis;
  readonly #probeName: (slotTag: string) => string;
  readonly #settings: DeliverySettings;
  readonly #events: DeliveryEvents;
  readonly #wanted = new Map<string, Wanted>();
  readonly #links = new Map<string, Link>();
  #closed = false;

  constructor(
    cluster: Cluster,
    /** A subscriber connection to one master, by `host:port`. */
    connect: (nodeKey: string) => Redis,
    probeName: (slotTag: string) => string,
    settings: DeliverySettings,
    events: DeliveryEvents,
  ) {
    this.#cluster = cluster;
    this.#connect = connect;
    this.#probeName = probeName;
    this.#settings = settings;
    this.#events = events;
    cluster.on("refresh", () => this.#replace());
  }

  /** Always: a master that is down fails only its own plates (see the class). */
  get ready(): boolean {
    return !this.#closed;
  }

  /**
   * Subscribes `name` at its slot's master. The slot map read last may be stale (a slot moved
   * since): a master's MOVED has the map read again (see `#open`), and a name the map moves to
   * another master's link while this waits is followed there, so the subscribe ends where the slot
   * is now, or fails; it never waits on a link that was dropped.
   */
  async add(name: string, plateId: PlateId | undefined): Promise<void> {
    const wanted: Wanted = { plateId, slot: keySlot(name), link: undefined, moved: undefined };
    this.#wanted.set(name, wanted);
    if (this.#place(name, wanted) === undefined) {
      this.#wanted.delete(name);
      throw new Error(`no master is known for hash slot ${wanted.slot}`);
    }
    for (;;) {
      const link = wanted.link!;
      const moved = new Promise<void>((resolve) => (wanted.moved = resolve));
      try {
        await Promise.race([this.#subscribeOn(link, name, wanted.slot), moved]);
      } catch (err) {
        if (this.#wanted.get(name) === wanted && wanted.link !== undefined && wanted.link !== link) continue;
        if (this.#wanted.get(name) === wanted) this.#forget(name, wanted);
        throw err;
      } finally {
        wanted.moved = undefined;
      }
      if (this.#wanted.get(name) !== wanted || wanted.link === undefined || wanted.link === link) return;
    }
  }

  /** Subscribes `name` on `link`: now if it is subscribed, else when it first is. */
  async #subscribeOn(link: Link, name: string, slot: number): Promise<void> {
    if (link.subscribed) await link.redis.ssubscribe(name);
    // A link being made subscribes every name it holds once connected; one that was up and
    // dropped is down (its master died): this plate fails until the slot map moves it.
    else if (link.everSubscribed) throw new Error(`the master of hash slot ${slot} (${link.nodeKey}) is unreachable`);
    else await link.opened;
  }

  async remove(name: string): Promise<void> {
    const wanted = this.#wanted.get(name);
    if (wanted === undefined) return;
    const link = wanted.link;
    this.#forget(name, wanted);
    if (link !== undefined && link.redis.status === "ready") await link.redis.sunsubscribe(name).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const links = [...this.#links.values()];
    this.#links.clear();
    this.#wanted.clear();
    await Promise.all(links.map((link) => this.#drop(link)));
  }

  /** Puts `name` on the link of its slot's current master (made if needed); undefined when none is known. */
  #place(name: string, wanted: Wanted): Link | undefined {
    const nodeKey = masterOf(this.#cluster, wanted.slot);
    if (nodeKey === undefined) return undefined;
    const link = this.#links.get(nodeKey) ?? this.#open(nodeKey);
    wanted.link = link;
    link.names.add(name);
    return link;
  }

  #forget(name: string, wanted: Wanted): void {
    this.#wanted.delete(name);
    const link = wanted.link;
    wanted.link = undefined;
    if (link === undefined) return;
    link.names.delete(name);
    link.cut.delete(name);
    link.dropped.delete(name);
    if (link.names.size === 0 && this.#links.get(link.nodeKey) === link) {
      this.#links.delete(link.nodeKey);
      void this.#drop(link);
    }
  }

  #open(nodeKey: string): Link {
    const redis = this.#connect(nodeKey);
    const slotTag = this.#slotTagOf(nodeKey);
    let settle: ((err?: Error) => void) | undefined;
    const opened = new Promise<void>((resolve, reject) => {
      settle = (err) => (err === undefined ? resolve() : reject(err));
    });
    // Nobody may wait: a failure unheard must not end the process.
    opened.catch(() => undefined);
    const link: Link = {
      everSubscribed: false,
      opened,
      abandon: (err) => settle?.(err),
      nodeKey,
      redis,
      names: new Set(),
      probeChannel: this.#probeName(slotTag),
      subscribed: false,
      cut: new Set(),
      dropped: new Set(),
      probe: new DeafnessProbe({
        intervalMs: this.#settings.probeIntervalMs,
        timeoutMs: this.#settings.probeTimeoutMs,
        wanted: () => link.subscribed && this.#settings.wanted(),
        // Routed by the cluster client to the slot's master now: if that is no longer this link's
        // master, the probe is not heard here and the link counts as deaf.
        publish: (payload) => this.#cluster.spublish(link.probeChannel, payload),
        lost: () => this.#probeLost(link),
      }),
    };
    this.#links.set(nodeKey, link);
    redis.on("ready", () => void this.#resubscribe(link).then(() => link.subscribed && settle?.()));
    redis.on("close", () => {
      if (!link.everSubscribed) settle?.(new Error(`the master ${nodeKey} is unreachable`));
      this.#cutLink(link);
    });
    // ioredis answers a SSUBSCRIBE refused with MOVED (a slot this master no longer holds) with
    // this event only; the command waits for its timeout. The map read again moves the name.
    redis.on("moved", () => this.#cluster.refreshSlotsCache());
    redis.on("error", (err: Error) => {
      // A slot moved away: Redis unsubscribes its shard channels unasked, which ioredis reports
      // as a reply no command waited for.
      const dropped = droppedShardChannel(err.message);
      if (dropped !== undefined) this.#dropped(link, dropped);
      else if (err.message.includes("sunsubscribe")) this.#cluster.refreshSlotsCache();
    });
    redis.on("smessage", (channel: string, payload: string) => {
      if (channel === link.probeChannel) link.probe.returned(payload);
      else if (link.names.has(channel)) this.#events.message(channel, payload);
    });
    return link;
  }

  /**
   * Redis unsubscribed `name` on `link` unasked: its slot left that master. The name's plate is cut
   * now (nothing of it is heard here any more), and the slot map is read until it places the name
   * elsewhere (`#replace` then subscribes it there and restores the plate). A read may still place
   * it here: answered by a node not yet told of the move, or started before it (ioredis lets a read
   * in flight answer for the one asked). Each is then followed by another, `DROPPED_REREAD_MS`
   * later; after `DROPPED_REREADS`, the name is subscribed on `link` again.
   */
  #dropped(link: Link, name: string): void {
    if (this.#links.get(link.nodeKey) !== link || !link.names.has(name)) {
      this.#cluster.refreshSlotsCache();
      return;
    }
    if (link.dropped.has(name)) return;
    // One follower a link: the channels of a slot are dropped one by one, and join it.
    const following = link.dropped.size > 0;
    link.dropped.add(name);
    if (link.subscribed) this.#cutNames(link, [name]);
    if (!following) void this.#followDropped(link);
  }

  /** Reads the slot map until it moves every name `link` holds dropped (see `#dropped`). */
  async #followDropped(link: Link): Promise<void> {
    for (let reads = 0; ; reads++) {
      // Not from inside an ioredis callback: one added there is dropped with the list it joins.
      await new Promise<void>((resolve) => setImmediate(() => this.#cluster.refreshSlotsCache(() => resolve())));
      if (this.#closed || this.#links.get(link.nodeKey) !== link || link.dropped.size === 0) return;
      if (reads + 1 >= DROPPED_REREADS) break;
      await new Promise((resolve) => setTimeout(resolve, DROPPED_REREAD_MS).unref());
    }
    // The map keeps the names here: subscribe them again (a MOVED, if any, reads the map anew).
    const names = [...link.dropped];
    link.dropped.clear();
    if (link.subscribed) void this.#subscribeMoved(link, names);
  }

  async #drop(link: Link): Promise<void> {
    link.abandon(new Error(`the subscriber connection to ${link.nodeKey} was dropped`));
    link.probe.stop();
    link.subscribed = false;
    link.redis.removeAllListeners("close");
    link.redis.removeAllListeners("ready");
    await closeConnection(link.redis);
  }

  /** A tag whose hash slot this master owns, for its probe channel (another master's slot if none is known). */
  #slotTagOf(nodeKey: string): string {
    for (let i = 0; i < SLOT_COUNT * 4; i++) {
      const tag = String(i);
      if (masterOf(this.#cluster, keySlot(tag)) === nodeKey) return tag;
    }
    return "0";
  }

  /** After every (re)connect of a link: subscribe to its probe and names, slot by slot, then restore what it cut. */
  async #resubscribe(link: Link): Promise<void> {
    // The probe's slot may have moved to another master since: pick one this master holds now.
    link.probeChannel = this.#probeName(this.#slotTagOf(link.nodeKey));
    try {
      await link.redis.ssubscribe(link.probeChannel);
      await this.#ssubscribe(link, link.names);
    } catch (err) {
      if (this.#links.get(link.nodeKey) !== link) return;
      this.#settings.warn?.("redis sharded resubscribe failed; reading the slot map again", { node: link.nodeKey, error: String(err) });
      this.#cluster.refreshSlotsCache();
      link.redis.disconnect(true);
      return;
    }
    link.subscribed = true;
    link.everSubscribed = true;
    link.dropped.clear();
    this.#restore(link, [...link.cut]);
    link.cut.clear();
    this.#events.changed();
  }

  /** SSUBSCRIBEs `link` to `names`, one command per hash slot (SSUBSCRIBE takes the channels of one slot). */
  async #ssubscribe(link: Link, names: Iterable<string>): Promise<void> {
    const bySlot = new Map<number, string[]>();
    for (const name of names) {
      const slot = this.#wanted.get(name)?.slot;
      if (slot === undefined) continue;
      let group = bySlot.get(slot);
      if (group === undefined) bySlot.set(slot, (group = []));
      group.push(name);
    }
    await Promise.all([...bySlot.values()].map((group) => link.redis.ssubscribe(...group)));
  }

  /** Tells "restored" for the plates of `names` (subscribed again on `link`). */
  #restore(link: Link, names: readonly string[]): void {
    const plates = new Set<PlateId>();
    for (const name of names) {
      const plateId = this.#wanted.get(name)?.plateId;
      if (plateId !== undefined && link.names.has(name)) plates.add(plateId);
    }
    if (plates.size > 0) this.#events.gap("restored", plates);
  }

  /** The link stopped hearing (closed, or found deaf): cut the plates of its names. */
  #cutLink(link: Link): void {
    if (!link.subscribed) return;
    link.subscribed = false;
    this.#cutNames(link, [...link.names]);
    this.#events.changed();
  }

  #cutNames(link: Link, names: readonly string[]): void {
    const plates = new Set<PlateId>();
    for (const name of names) {
      if (link.cut.has(name)) continue;
      link.cut.add(name);
      const plateId = this.#wanted.get(name)?.plateId;
      if (plateId !== undefined) plates.add(plateId);
    }
    if (plates.size > 0) this.#events.gap("cut", plates);
  }

  #probeLost(link: Link): void {
    if (this.#closed || this.#links.get(link.nodeKey) !== link) return;
    this.#settings.warn?.("redis sharded subscriber is deaf (probe lost); reconnecting it", { node: link.nodeKey });
    this.#events.probeLost();
    this.#cutLink(link);
    this.#cluster.refreshSlotsCache();
    link.redis.disconnect(true);
  }

  /**
   * After a refresh of the slot map: every name whose slot's master is not its link's moves to the
   * link of its new master; its plates are cut now and restored once it is subscribed there.
   */
  #replace(): void {
    if (this.#closed) return;
    const moves = new Map<Link, string[]>();
    for (const [name, wanted] of this.#wanted) {
      const nodeKey = masterOf(this.#cluster, wanted.slot);
      const from = wanted.link;
      if (nodeKey === undefined || from?.nodeKey === nodeKey) continue;
      if (from !== undefined) {
        if (from.subscribed && !from.cut.has(name)) this.#cutNames(from, [name]);
        const wasCut = from.cut.delete(name);
        from.names.delete(name);
        from.dropped.delete(name);
        if (from.subscribed) void from.redis.sunsubscribe(name).catch(() => undefined);
        if (from.names.size === 0 && this.#links.get(from.nodeKey) === from) {
          this.#links.delete(from.nodeKey);
          void this.#drop(from);
        }
        const to = this.#place(name, wanted)!;
        wanted.moved?.();
        if (wasCut) to.cut.add(name);
        let moved = moves.get(to);
        if (moved === undefined) moves.set(to, (moved = []));
        moved.push(name);
      } else {
        this.#place(name, wanted);
      }
    }
    for (const [to, names] of moves) {
      // A link not connected yet subscribes them all at its "ready" (and restores what it holds cut).
      if (!to.subscribed) continue;
      void this.#subscribeMoved(to, names);
    }
  }

  async #subscribeMoved(link: Link, names: readonly string[]): Promise<void> {
    try {
      await this.#ssubscribe(link, names);
    } catch {
      // Not subscribed there: the link reconnects, and its "ready" subscribes and restores them.
      link.redis.disconnect(true);
      return;
    }
    const restored = names.filter((name) => link.cut.delete(name));
    this.#restore(link, restored);
  }
}
