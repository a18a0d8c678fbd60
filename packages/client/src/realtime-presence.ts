import { PlateClientError } from "./errors.js";
import type { PresenceMember, PresenceMembers } from "./types.js";

/**
 * Presence (route 10 of the spec) for one channel subscription of a realtime connection: the
 * members its `presence: true` subscription was told of, and this client's own membership (its
 * `track` / `untrack` requests, and the state to track again on a new connection). It knows no
 * transport: the connection hands it frames, a way to send on the current attempt, and answers.
 */

/** A presence frame of the service: the whole state (first, or again after a gap), or one change. */
export type PresenceFrame =
  | { readonly type: "presence"; readonly channel: string; readonly state: Readonly<Record<string, PresenceMember>> }
  | {
      readonly type: "presence";
      readonly channel: string;
      readonly joins: Readonly<Record<string, PresenceMember>>;
      readonly leaves: Readonly<Record<string, PresenceMember>>;
    };

/**
 * What a frame changed. `state`: the members were replaced. `diff`: `left` are gone, `joined`
 * came or changed their state (`previous` holds the old record of those that changed). Both carry
 * the members after it.
 */
export type PresenceChange =
  | { readonly kind: "state"; readonly members: PresenceMembers }
  | {
      readonly kind: "diff";
      readonly members: PresenceMembers;
      readonly joined: PresenceMembers;
      readonly previous: PresenceMembers;
      readonly left: PresenceMembers;
    };

/** What to send: a track of `state`, or (undefined) an untrack. */
export type Tracks = { readonly state: unknown } | undefined;

/** Sends one request on the current attempt and answers its ref. */
export type PresenceSend = (tracks: Tracks) => number;

/** A track or untrack, until the service answers it; no `waiter`: the client's own track again after a reconnect. */
interface Op {
  readonly tracks: Tracks;
  readonly waiter?: { readonly resolve: () => void; readonly reject: (error: PlateClientError) => void };
}

const NO_MEMBERS: PresenceMembers = new Map();

export class Presence {
  #members: PresenceMembers = NO_MEMBERS;
  /** Whether the current server-side subscription sent its whole state: changes before it are not applied. */
  #known = false;
  /**
   * The state the service last took from this client (`ok` to a track), tracked again on each
   * new connection (the service forgets a member whose connection ended); undefined when untracked.
   */
  #tracked: Tracks;
  /** Requests made while the subscription was not live, oldest first; sent once it is. */
  readonly #queued: Op[] = [];
  /** Requests sent on the current attempt, awaiting an answer, by ref. */
  readonly #sent = new Map<number, Op>();
  /** How to send while the subscription is live on the current attempt. */
  #send: PresenceSend | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retries = 0;

  /** `retryDelayMs`: the wait before tracking again after a retryable refusal (the reconnect backoff). */
  constructor(private readonly retryDelayMs: (failures: number, retryAfterMs: number | undefined) => number) {}

  /** The members last told (kept, stale, while the connection reconnects, until the next whole state). */
  get members(): PresenceMembers {
    return this.#members;
  }

  /**
   * Applies a frame of the current server-side subscription; undefined when it changes nothing
   * (a change before the first whole state). Each change makes a new map: a copy of at most
   * `PRESENCE_MAX_MEMBERS` (1,000) entries, so that a map handed to the app never changes.
   */
  apply(frame: PresenceFrame): PresenceChange | undefined {
    if ("state" in frame) {
      this.#known = true;
      this.#members = new Map(Object.entries(frame.state));
      return { kind: "state", members: this.#members };
    }
    if (!this.#known) return undefined;
    const members = new Map(this.#members);
    const joined = new Map<string, PresenceMember>();
    const previous = new Map<string, PresenceMember>();
    const left = new Map<string, PresenceMember>();
    for (const [clientId, record] of Object.entries(frame.leaves)) {
      // An update is its old record in `leaves` and the new one in `joins`: it did not leave.
      if (Object.hasOwn(frame.joins, clientId)) continue;
      members.delete(clientId);
      left.set(clientId, record);
    }
    for (const [clientId, record] of Object.entries(frame.joins)) {
      const old = members.get(clientId);
      if (old !== undefined) previous.set(clientId, old);
      members.set(clientId, record);
      joined.set(clientId, record);
    }
    this.#members = members;
    return { kind: "diff", members, joined, previous, left };
  }

  /** A track (`tracks`) or an untrack the app asked for: sent now if live, else when it is. */
  request(tracks: Tracks): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const op: Op = { tracks, waiter: { resolve, reject } };
      if (this.#send !== undefined) return this.#sendOp(op);
      // Not live: the service holds no membership of this client, so there is nothing to untrack.
      if (tracks === undefined && this.#queued.length === 0) {
        this.#tracked = undefined;
        return resolve();
      }
      this.#queued.push(op);
    });
  }

  /**
   * The subscription is live on the service (a new server-side subscription): its whole state
   * comes next; the last tracked state is tracked again, then what was asked meanwhile, in order.
   */
  resume(send: PresenceSend): void {
    this.#send = send;
    this.#known = false;
    this.#retries = 0;
    if (this.#tracked !== undefined) this.#sendOp({ tracks: this.#tracked });
    for (const op of this.#queued.splice(0)) this.#sendOp(op);
  }

  /**
   * The service answered `ref` of this subscription: `ok` (`error` undefined) or a refusal. A
   * refused track the app asked for rejects, and the service keeps the state it had. A refused
   * track again (after a reconnect) is answered, for the subscription's `onError`: the client is
   * then not a member; a retryable one is tried again after a backoff.
   */
  answer(ref: number, error?: PlateClientError): PlateClientError | undefined {
    const op = this.#sent.get(ref);
    if (op === undefined) return undefined;
    this.#sent.delete(ref);
    if (error === undefined) {
      if (op.waiter !== undefined) this.#tracked = op.tracks;
      op.waiter?.resolve();
      return undefined;
    }
    if (op.waiter !== undefined) {
      op.waiter.reject(error);
      return undefined;
    }
    if (!error.retryable) {
      if (this.#tracked === op.tracks) this.#tracked = undefined;
      return error;
    }
    const send = this.#send;
    clearTimeout(this.#retry);
    this.#retry = setTimeout(
      () => {
        this.#retry = undefined;
        // Still the same attempt, and nothing the app asked since replaced it.
        if (this.#send === send && send !== undefined && this.#tracked === op.tracks) this.#sendOp(op);
      },
      this.retryDelayMs(this.#retries++, error.details.retryAfterMs),
    );
    return error;
  }

  /**
   * The subscription is no longer live (its attempt ended, or it is asked for again): what was
   * sent and not answered goes back to the queue, first, to be sent again; tracking twice is
   * harmless, and the service dropped this client's membership with its subscription.
   */
  dropped(): void {
    this.#send = undefined;
    this.#known = false;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    const sent = [...this.#sent.values()].filter((op) => op.waiter !== undefined);
    this.#sent.clear();
    this.#queued.unshift(...sent);
  }

  /** The subscription closed: what waits rejects with `error` (default `connection_closed`), and the members are forgotten. */
  close(error?: PlateClientError): void {
    this.dropped();
    this.#members = NO_MEMBERS;
    this.#tracked = undefined;
    const why =
      error ?? new PlateClientError("connection_closed", "The subscription was closed before the service answered.");
    for (const op of this.#queued.splice(0)) op.waiter?.reject(why);
  }

  #sendOp(op: Op): void {
    this.#sent.set(this.#send!(op.tracks), op);
  }
}
