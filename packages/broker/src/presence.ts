import type { ChannelName, PlateId } from "@plate/protocol";
import type { Unsubscribe } from "./broker.js";

/**
 * Who is on a channel (spec, route 10): members, each a connection (its client id) with a small
 * JSON record, kept by the broker so every node sees the same, and changes told to every node.
 *
 * A member's record is JSON text, `{"user"?,"state","joinedAt"}`, made by the edge and never parsed
 * here: a state and a change are written to clients by concatenation, serialized once.
 *
 * Contract (every implementation passes `presence.contract.ts`):
 * - Every change (`track`, `untrack`, a dead node's members removed) gets a `version` greater than
 *   every earlier one of its plate, and `listen`ers of the channel on every node receive the
 *   changes of one channel in version order, each once. `state` answers the members and the version
 *   of the last change they include: a listener that started before reading it applies only the
 *   changes after that version and misses nothing.
 * - `track` of a client already present replaces its record: one change with the old record in
 *   `leaves` and the new in `joins`. `untrack` of a client not present changes nothing.
 * - A channel holds at most `maxMembers` members: `track` of one more answers `"full"` and changes
 *   nothing.
 * - On Redis, the members of a node that stops without untracking them are removed by the other
 *   nodes within `PresenceTimes.leaseMs + sweepMs` (plus one refresh period), as changes.
 */
export interface Presence {
  /** Listens to a channel's changes; resolves once changes made after it will reach `listener`. */
  listen(plateId: PlateId, channel: ChannelName, listener: PresenceListener): Promise<Unsubscribe>;
  /** Adds or replaces a member; answers the change's version and whether it joined (was not a member), or "full". */
  track(plateId: PlateId, channel: ChannelName, clientId: string, record: string, maxMembers: number): Promise<Tracked | "full">;
  /** Removes a member; answers the change's version, or 0 when it was not there. */
  untrack(plateId: PlateId, channel: ChannelName, clientId: string): Promise<number>;
  /** The channel's members now, and the version they are at. */
  state(plateId: PlateId, channel: ChannelName): Promise<PresenceState>;
  /**
   * Told of each member this node removed because its node died (Redis: the sweep), once over all
   * nodes. Returns a function that removes the listener.
   */
  onSwept(listener: (plateId: PlateId, channel: ChannelName, clientId: string, record: string) => void): () => void;
  /**
   * Counts this node as having subscribers of a channel (call once when its first arrives);
   * answers true when it is the only node that has (the channel became occupied).
   */
  occupy(plateId: PlateId, channel: ChannelName): Promise<boolean>;
  /** The reverse, when its last leaves; answers true when no node has any left (the channel became vacant). */
  vacate(plateId: PlateId, channel: ChannelName): Promise<boolean>;
  /** Told of each channel a dead node's sweep left vacant, on the node that swept, once over all nodes. */
  onVacated(listener: (plateId: PlateId, channel: ChannelName) => void): () => void;
}

/** A track done: its change's version, and whether the client joined (false: its record was replaced). */
export interface Tracked {
  readonly version: number;
  readonly joined: boolean;
}

export type PresenceListener = (change: PresenceChange) => void;

/** The members of a channel: client id → record (JSON text), at `version`. */
export interface PresenceState {
  readonly version: number;
  readonly members: ReadonlyMap<string, string>;
}

/**
 * One change of a channel's members: `joins` and `leaves` are JSON objects (text) of client id →
 * record, as route 10's diff frame carries them. An update is the old record leaving and the new
 * one joining.
 */
export interface PresenceChange {
  readonly version: number;
  readonly joins: string;
  readonly leaves: string;
}

/** How a Redis node keeps its members alive, and how soon a dead node's members go. */
export interface PresenceTimes {
  /** A node's lease: its members are removed once it has not renewed it for this long. */
  readonly leaseMs: number;
  /** How often a node looks for expired leases (and renews its own, every `leaseMs / 3`). */
  readonly sweepMs: number;
}

/** `{"<clientId>":<record>}`: client ids are `[A-Za-z0-9_.-]`, so no escaping is needed. */
export function oneMember(clientId: string, record: string): string {
  return '{"' + clientId + '":' + record + "}";
}

export const NO_MEMBERS = "{}";
