import type { ChannelName, PlateId } from "@plate/protocol";
import type { Unsubscribe } from "./broker.js";
import { NO_MEMBERS, oneMember } from "./presence.js";
import type { Presence, PresenceChange, PresenceListener, PresenceState, Tracked } from "./presence.js";

/** One channel's members (client id → record) and listeners. */
interface ChannelPresence {
  readonly members: Map<string, string>;
  readonly listeners: Set<PresenceListener>;
}

/**
 * Presence of the embedded broker: one process, so a member leaves with its connection and no
 * lease is needed. Changes reach listeners synchronously, in order. A channel with neither members
 * nor listeners is forgotten.
 */
export class MemoryPresence implements Presence {
  readonly #channels = new Map<string, ChannelPresence>();
  /** How many times each channel was occupied and not vacated yet. */
  readonly #occupancy = new Map<string, number>();
  /** The last version given, per plate. */
  readonly #versions = new Map<PlateId, number>();

  listen(plateId: PlateId, channel: ChannelName, listener: PresenceListener): Promise<Unsubscribe> {
    const key = keyOf(plateId, channel);
    const entry = this.#entry(key);
    // Wrap so that the same function listening twice counts twice.
    const delivery: PresenceListener = (change) => listener(change);
    entry.listeners.add(delivery);
    return Promise.resolve(() => {
      entry.listeners.delete(delivery);
      this.#forgetIfEmpty(key, entry);
      return Promise.resolve();
    });
  }

  track(plateId: PlateId, channel: ChannelName, clientId: string, record: string, maxMembers: number): Promise<Tracked | "full"> {
    const key = keyOf(plateId, channel);
    const entry = this.#entry(key);
    const old = entry.members.get(clientId);
    if (old === undefined && entry.members.size >= maxMembers) {
      this.#forgetIfEmpty(key, entry);
      return Promise.resolve("full");
    }
    entry.members.set(clientId, record);
    const version = this.#tell(plateId, entry, oneMember(clientId, record), old === undefined ? NO_MEMBERS : oneMember(clientId, old));
    return Promise.resolve({ version, joined: old === undefined });
  }

  untrack(plateId: PlateId, channel: ChannelName, clientId: string): Promise<number> {
    const key = keyOf(plateId, channel);
    const entry = this.#channels.get(key);
    const old = entry?.members.get(clientId);
    if (entry === undefined || old === undefined) return Promise.resolve(0);
    entry.members.delete(clientId);
    const version = this.#tell(plateId, entry, NO_MEMBERS, oneMember(clientId, old));
    this.#forgetIfEmpty(key, entry);
    return Promise.resolve(version);
  }

  state(plateId: PlateId, channel: ChannelName): Promise<PresenceState> {
    const members = this.#channels.get(keyOf(plateId, channel))?.members;
    return Promise.resolve({ version: this.#versions.get(plateId) ?? 0, members: new Map(members) });
  }

  /** One process: no node dies without its members. */
  onSwept(): () => void {
    return () => undefined;
  }

  /** One node: counted per call, so that a fixture's "nodes" (this one broker) agree with Redis. */
  occupy(plateId: PlateId, channel: ChannelName): Promise<boolean> {
    const key = keyOf(plateId, channel);
    const count = (this.#occupancy.get(key) ?? 0) + 1;
    this.#occupancy.set(key, count);
    return Promise.resolve(count === 1);
  }

  vacate(plateId: PlateId, channel: ChannelName): Promise<boolean> {
    const key = keyOf(plateId, channel);
    const count = this.#occupancy.get(key);
    if (count === undefined) return Promise.resolve(false);
    if (count > 1) this.#occupancy.set(key, count - 1);
    else this.#occupancy.delete(key);
    return Promise.resolve(count === 1);
  }

  onVacated(): () => void {
    return () => undefined;
  }

  #tell(plateId: PlateId, entry: ChannelPresence, joins: string, leaves: string): number {
    const version = (this.#versions.get(plateId) ?? 0) + 1;
    this.#versions.set(plateId, version);
    const change: PresenceChange = { version, joins, leaves };
    for (const listener of entry.listeners) listener(change);
    return version;
  }

  #entry(key: string): ChannelPresence {
    let entry = this.#channels.get(key);
    if (entry === undefined) {
      entry = { members: new Map(), listeners: new Set() };
      this.#channels.set(key, entry);
    }
    return entry;
  }

  #forgetIfEmpty(key: string, entry: ChannelPresence): void {
    if (entry.members.size === 0 && entry.listeners.size === 0 && this.#channels.get(key) === entry) this.#channels.delete(key);
  }
}

/** A plate id holds no `/`, so no two plates' keys meet. */
function keyOf(plateId: PlateId, channel: ChannelName): string {
  return plateId + "/" + channel;
}
