import { createHash } from "node:crypto";
import { FILTER_SHAPE_MESSAGE, PlateError, asFilterSpec, isErrorCode, readJsonObject, readName, toPlateError, topicKey } from "@plate/protocol";
import type {
  ErrorCode,
  PlateId,
  PublishFrame,
  RealtimeClientFrame,
  Ref,
  SubscriptionInfo,
  SubscriptionName,
  SubscriptionRequest,
  UnreadableFrame,
} from "@plate/protocol";
import type { Broker, Unsubscribe } from "@plate/broker";
import { signingKeyOwner } from "@plate/store";
import type { Logger } from "../log.js";
import type { Connection } from "./connection.js";
import { nanoid } from "nanoid";
import { claimsGrant } from "./grants.js";
import type { Grant } from "./grants.js";
import type { SignedTokens, TokenClaims } from "./signed-tokens.js";
import type { PresenceHub } from "./presence.js";
import type { Publisher } from "./publisher.js";
import type { Bucket, Rate, RateLimiter } from "./rate-limit.js";
import type { Subscriptions } from "./subscriptions.js";
import { infoOf, topicOf } from "./subscriptions.js";

/** A change of a live connection's subscriptions (a WebSocket frame, or route 9's POST). */
export interface Change {
  readonly subscribe: readonly SubscriptionRequest[];
  readonly unsubscribe: readonly SubscriptionName[];
}

/**
 * Who asks for a change through route 9's POST: a key of the plate that the node receiving the
 * POST authenticated and found allowed to subscribe to every topic asked for (`vouched`); a signed
 * client token that node verified and found allowing them, of the user (`sub`) whose token the
 * stream holds (`user`); or the client token of the path the stream was opened with (its hash:
 * the stream's node compares it).
 */
export type Asker =
  | { readonly kind: "vouched" }
  | { readonly kind: "user"; readonly sub: string }
  | { readonly kind: "token"; readonly tokenHash: string };

/** Settings of realtime connections (see config.ts). */
export interface RealtimeLimits {
  readonly maxPendingRequests: number;
  readonly changeTimeoutMs: number;
}

/**
 * Publishing from connections (route 12's `publish` frame): through the node's `Publisher` (the
 * plate's publish rate, history and resume, as for HTTP), within a rate per connection and a rate
 * per plate for what its clients publish.
 */
export interface ClientPublishing {
  readonly publisher: Pick<Publisher, "publish">;
  /** `CLIENT_PUBLISH_RATE_PER_S` / `CLIENT_PUBLISH_BURST`, a bucket per connection. */
  readonly perConnection: Rate;
  /** `CLIENT_PUBLISH_PLATE_RATE_PER_S` / `CLIENT_PUBLISH_PLATE_BURST`, a bucket per plate (on this node). */
  readonly perPlate: Pick<RateLimiter, "take">;
}

/** Longest delay one Node timer takes (2^31 - 1 ms, about 24.8 days); a longer wait is set again. */
const LONGEST_TIMER_MS = 2_147_483_647;

/** A v2 connection of this node: its grant, and its requests, carried out one at a time. */
interface Live {
  readonly conn: Connection;
  /** What it may subscribe to; a refresh (a fresh signed token) replaces it. */
  grant: Grant;
  /** The claims of the signed client token it holds, if it was opened with one. */
  claims: TokenClaims | undefined;
  /** Ends it with `token_expired` when its token runs out unrefreshed. */
  expiry: NodeJS.Timeout | undefined;
  /** The hash of the client token it was opened with (route 5), if any. */
  readonly tokenHash: string | undefined;
  /** The last request in line: each runs once the one before it is done. */
  tail: Promise<void>;
  pending: number;
  /** Its publish rate (`ClientPublishing.perConnection`), made at its first publish. */
  publishBucket: Bucket | undefined;
}

/** A note between nodes: a change for a stream on the receiving node, or the answer to one. */
type Note =
  | {
      readonly t: "change";
      readonly id: string;
      readonly from: string;
      readonly plateId: string;
      readonly clientId: string;
      readonly asker: Asker;
      readonly change: Change;
    }
  | { readonly t: "answer"; readonly id: string; readonly subscriptions?: SubscriptionInfo[]; readonly error?: { code: string; message: string } };

/**
 * Route 9's live changes: subscribe and unsubscribe on a WebSocket (frames with `ref`), and
 * `POST /{plateId}/realtime/{clientId}` for an SSE stream on whichever node holds it.
 *
 * A connection's requests are carried out one at a time, in the order they came (a subscribe
 * reads the history; an unsubscribe of the same name that came after it waits for it), at most
 * `maxPendingRequests` in line. A client id starts with its node's id (`{nodeId}.{random}`): the
 * node that gets a POST for another node's stream sends it there as a note through the broker
 * (`Broker.send`) and waits for the answer.
 */
export class Realtime {
  readonly #live = new Map<string, Live>();
  /** Route 9 POSTs relayed to another node, by note id: what to do with the answer. */
  readonly #waiting = new Map<string, (note: Note & { t: "answer" }) => void>();
  #stopListening: Unsubscribe | undefined;

  constructor(
    private readonly subscriptions: Subscriptions,
    private readonly broker: Broker,
    /** This node's id: the first part of its client ids, and its address for notes. */
    readonly nodeId: string,
    private readonly limits: RealtimeLimits,
    private readonly log: Logger,
    /** Verifies a refreshed signed client token (route 11). */
    private readonly signedTokens: Pick<SignedTokens, "verify" | "skewMs">,
    private readonly publishing: ClientPublishing,
    private readonly presence: PresenceHub,
  ) {}

  /** Starts listening to notes for this node. */
  async listen(): Promise<void> {
    this.#stopListening = await this.broker.listen(this.nodeId, (payload) => this.#onNote(payload));
  }

  async close(): Promise<void> {
    await this.#stopListening?.();
  }

  /** A new client id of this node. */
  newClientId(): string {
    return `${this.nodeId}.${nanoid()}`;
  }

  /** Registers a v2 connection until it ends. `token`: the client token it was opened with, if any. */
  register(conn: Connection, grant: Grant, token?: string, claims?: TokenClaims): void {
    const live: Live = {
      conn,
      grant,
      claims,
      expiry: undefined,
      tokenHash: token === undefined ? undefined : hashToken(token),
      tail: Promise.resolve(),
      pending: 0,
      publishBucket: undefined,
    };
    this.#live.set(conn.clientId, live);
    this.#armExpiry(live);
    conn.onEnd(() => {
      clearTimeout(live.expiry);
      if (this.#live.get(conn.clientId) === live) this.#live.delete(conn.clientId);
    });
  }

  /**
   * Ends the connection with `token_expired` (an error frame, then 4401) when its signed token
   * runs out (its `exp` and the clock skew) without a fresh one. Timers longer than Node's longest
   * are set again when they fire.
   */
  #armExpiry(live: Live): void {
    clearTimeout(live.expiry);
    live.expiry = undefined;
    if (live.claims === undefined) return;
    const left = live.claims.expiresAtMs + this.signedTokens.skewMs - Date.now();
    if (left <= 0) {
      live.conn.end("token_expired", "Your client token expired; connect again with a fresh one (refresh it before it expires).");
      return;
    }
    live.expiry = setTimeout(() => this.#armExpiry(live), Math.min(left, LONGEST_TIMER_MS));
    live.expiry.unref();
  }

  /**
   * A fresh signed token on a live WebSocket: the connection keeps its subscriptions and messages,
   * now under the new token's claims and expiry; those it no longer allows end with
   * `unsubscribed` and `"reason":"forbidden"`. Only a connection opened with a signed token may
   * refresh, and only with a token of its plate.
   */
  async #refresh(live: Live, token: string, ref: Ref | undefined): Promise<void> {
    const { conn } = live;
    if (live.claims === undefined) {
      throw new PlateError("bad_request", "This connection was opened with an API key; only one opened with a signed client token refreshes it.");
    }
    const claims = await this.signedTokens.verify(conn.plateId, token);
    live.claims = claims;
    // Deleting the signing key of the token it now holds is what closes it from now on.
    conn.keyId = signingKeyOwner(claims.kid);
    live.grant = claimsGrant(claims);
    this.#armExpiry(live);
    for (const sub of [...conn.subscriptions.values()]) {
      try {
        live.grant.subscribe(sub.topic);
      } catch {
        sub.end();
        conn.frame({ type: "unsubscribed", ...sub.name, reason: "forbidden" });
      }
    }
    conn.frame({ type: "ok", ...(ref === undefined ? {} : { ref }) });
  }

  /**
   * Takes one publish from the connection's rate and its plate's client rate, when the frame
   * arrives: a client over its rate is refused at once, not queued.
   */
  #takePublishRate(live: Live): void {
    const now = Date.now();
    const { perConnection, perPlate } = this.publishing;
    live.publishBucket ??= perConnection.bucket(now);
    perConnection.take(live.publishBucket, now);
    perPlate.take(live.conn.plateId, now);
  }

  /**
   * A message a client publishes from its connection, once its earlier requests are done (so one
   * connection's publications keep their order): allowed by its credential (checked in line, after
   * any refresh before it), published as an HTTP publish is, with `from` naming the client and its
   * token's user; answered `published` with its id.
   */
  async #publish(live: Live, frame: PublishFrame): Promise<void> {
    const { conn } = live;
    live.grant.publish({ plateId: conn.plateId, pattern: false, channel: frame.channel });
    const from = live.claims === undefined ? { clientId: conn.clientId } : { clientId: conn.clientId, user: live.claims.sub };
    const { message } = await this.publishing.publisher.publish(conn.plateId, frame.channel, frame.body, { event: frame.event, from, volatile: frame.volatile });
    conn.frame({ type: "published", ...(frame.ref === undefined ? {} : { ref: frame.ref }), id: message.id });
  }

  /** A frame from a v2 WebSocket client, after auth (`ping` is answered by the transport). */
  receive(conn: Connection, frame: Exclude<RealtimeClientFrame, { type: "ping" }> | UnreadableFrame): void {
    const live = this.#live.get(conn.clientId);
    if (live === undefined || live.conn !== conn) return;
    const ref = frame.ref;
    switch (frame.type) {
      case "unreadable":
        conn.frame(refusal(ref, frame.code, frame.message));
        return;
      case "auth":
        if (frame.signed !== true) {
          conn.frame(refusal(ref, "bad_request", "This connection is authenticated; refresh it with {\"type\":\"auth\",\"token\":\"<fresh signed client token>\"}."));
          return;
        }
        this.#inLine(live, () => this.#refresh(live, frame.key, ref)).catch((err: unknown) => this.#refuse(conn, ref, err));
        return;
      case "subscribe":
        this.#inLine(live, async () => {
          const topic = topicOf(conn, frame);
          live.grant.subscribe(topic);
          const info = await this.subscriptions.subscribe(conn, { topic, since: frame.since, self: frame.self, filter: frame.filter }, ref);
          const sub = info === undefined ? undefined : conn.subscriptions.get(topicKey(topic));
          if (frame.presence === true && sub !== undefined) await this.presence.watch(sub);
        }).catch((err: unknown) => this.#refuse(conn, ref, err));
        return;
      case "presence.track":
        this.#inLine(live, async () => {
          live.grant.presence({ plateId: conn.plateId, pattern: false, channel: frame.channel });
          await this.presence.track(conn, frame.channel, frame.state, live.claims?.sub);
          conn.frame({ type: "ok", ...(ref === undefined ? {} : { ref }) });
        }).catch((err: unknown) => this.#refuse(conn, ref, err));
        return;
      case "presence.untrack":
        this.#inLine(live, async () => {
          await this.presence.untrack(conn, frame.channel);
          conn.frame({ type: "ok", ...(ref === undefined ? {} : { ref }) });
        }).catch((err: unknown) => this.#refuse(conn, ref, err));
        return;
      case "publish":
        try {
          this.#takePublishRate(live);
        } catch (err) {
          this.#refuse(conn, ref, err);
          return;
        }
        this.#inLine(live, () => this.#publish(live, frame)).catch((err: unknown) => this.#refuse(conn, ref, err));
        return;
      case "unsubscribe":
        this.#inLine(live, () => {
          this.subscriptions.unsubscribe(conn, frame, ref);
          return Promise.resolve();
        }).catch((err: unknown) => this.#refuse(conn, ref, err));
        return;
      default: {
        const never: never = frame;
        return never;
      }
    }
  }

  /**
   * Route 9's POST: changes the subscriptions of the stream `clientId` of `plateId`, on this node
   * or another; answers its subscriptions after the change. Throws `not_found` for a client id no
   * node holds (in this plate), `forbidden` for a token that is not the stream's or a topic it does
   * not allow, `broker_unavailable` when the other node cannot be reached in time.
   */
  async change(plateId: PlateId, clientId: string, asker: Asker, change: Change): Promise<SubscriptionInfo[]> {
    const dot = clientId.indexOf(".");
    if (dot <= 0) throw notFound();
    const nodeId = clientId.slice(0, dot);
    if (nodeId === this.nodeId) return this.#apply(plateId, clientId, asker, change);
    const id = nanoid();
    const { answer, cancel } = this.#awaitAnswer(id);
    const note: Note = { t: "change", id, from: this.nodeId, plateId, clientId, asker, change };
    let nodes: number;
    try {
      nodes = await this.broker.send(nodeId, JSON.stringify(note));
    } catch (err) {
      cancel();
      throw err;
    }
    if (nodes === 0) {
      cancel();
      throw notFound();
    }
    const reply = await answer;
    if (reply.error !== undefined) {
      throw new PlateError(isErrorCode(reply.error.code) ? reply.error.code : "internal_error", reply.error.message);
    }
    return reply.subscriptions ?? [];
  }

  /** Carries out a change for a stream of this node, in line with its other requests. */
  async #apply(plateId: PlateId, clientId: string, asker: Asker, change: Change): Promise<SubscriptionInfo[]> {
    const live = this.#live.get(clientId);
    if (live === undefined || live.conn.plateId !== plateId || live.conn.ended) throw notFound();
    const { conn } = live;
    if (asker.kind === "token") {
      if (live.tokenHash === undefined || live.tokenHash !== asker.tokenHash) {
        throw new PlateError("forbidden", "That client token did not open this stream; use its own, or a key with scope subscribe.");
      }
      for (const asked of change.subscribe) live.grant.subscribe(topicOf(conn, asked));
    }
    if (asker.kind === "user") {
      if (live.claims === undefined || live.claims.sub !== asker.sub) {
        throw new PlateError("forbidden", "This stream holds no signed token of that user; use its own user's token, or a key with scope subscribe.");
      }
      // The stream's own token must allow them too (it is what a refresh would check).
      for (const asked of change.subscribe) live.grant.subscribe(topicOf(conn, asked));
    }
    return this.#inLine(live, async () => {
      for (const name of change.unsubscribe) {
        if (conn.subscriptions.has(topicKeyOf(conn, name))) this.subscriptions.unsubscribe(conn, name);
      }
      for (const asked of change.subscribe) {
        if (conn.subscriptions.has(topicKeyOf(conn, asked))) continue;
        await this.subscriptions.subscribe(conn, { topic: topicOf(conn, asked), since: asked.since, filter: asked.filter });
      }
      return [...conn.subscriptions.values()].map(infoOf);
    });
  }

  /**
   * Runs `work` after the connection's earlier requests, answering what it answers. Past
   * `maxPendingRequests` in line it is refused with `rate_limited` at once; on a connection that
   * ended meanwhile, with `not_found`.
   */
  #inLine<T>(live: Live, work: () => Promise<T>): Promise<T> {
    if (live.pending >= this.limits.maxPendingRequests) {
      return Promise.reject(
        new PlateError("rate_limited", `At most ${this.limits.maxPendingRequests} requests may wait on one connection; wait for the answers.`, {
          retryAfterS: 1,
        }),
      );
    }
    live.pending += 1;
    const run = live.tail.then(() => (live.conn.ended ? Promise.reject(notFound()) : work()));
    live.tail = run.then(
      () => void (live.pending -= 1),
      () => void (live.pending -= 1),
    );
    return run;
  }

  /** Tells a WebSocket client its request was refused (an error frame with its `ref`); the connection stays open. */
  #refuse(conn: Connection, ref: Ref | undefined, err: unknown): void {
    const error = toPlateError(err);
    if (error.code === "internal_error") this.log.error("realtime request failed", { plateId: conn.plateId, error: String(err) });
    conn.frame(refusal(ref, error.code, error.message));
  }

  /**
   * Waits for the answer note `id`, up to `REALTIME_CHANGE_TIMEOUT_MS` (then `broker_unavailable`).
   * `cancel` stops waiting (the note was not delivered): nothing is left behind.
   */
  #awaitAnswer(id: string): { answer: Promise<Note & { t: "answer" }>; cancel: () => void } {
    let cancel = (): void => undefined;
    const answer = new Promise<Note & { t: "answer" }>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new PlateError("broker_unavailable", "The node holding that stream did not answer in time; retry.", { retryAfterS: 1 }));
      }, this.limits.changeTimeoutMs);
      cancel = () => {
        clearTimeout(timer);
        this.#waiting.delete(id);
      };
      this.#waiting.set(id, (note) => {
        cancel();
        resolve(note);
      });
    });
    // It may reject before it is awaited (the send itself is slow): not an unhandled rejection.
    answer.catch(() => undefined);
    return { answer, cancel };
  }

  #onNote(payload: string): void {
    const note = readNote(payload);
    if (note === undefined) return;
    if (note.t === "answer") {
      this.#waiting.get(note.id)?.(note);
      return;
    }
    const answer = (body: Omit<Note & { t: "answer" }, "t" | "id">) =>
      this.broker.send(note.from, JSON.stringify({ t: "answer", id: note.id, ...body })).catch((err: unknown) =>
        this.log.warn("realtime answer not sent", { error: String(err) }),
      );
    this.#apply(note.plateId as PlateId, note.clientId, note.asker, note.change).then(
      (subscriptions) => void answer({ subscriptions }),
      (err: unknown) => {
        const error = toPlateError(err);
        void answer({ error: { code: error.code, message: error.message } });
      },
    );
  }
}

/** A client token as the stream's node compares it (the token itself never travels between nodes). */
export function hashToken(token: string): string {
  return createHash("sha256").update("plate-realtime-token\0" + token).digest("base64url");
}

function topicKeyOf(conn: Connection, name: SubscriptionName): string {
  return topicKey(topicOf(conn, name));
}

function notFound(): PlateError {
  return new PlateError("not_found", "No open realtime stream has that client id in this plate.");
}

function refusal(ref: Ref | undefined, code: ErrorCode, message: string) {
  return { type: "error" as const, ...(ref === undefined ? {} : { ref }), error: { code, message } };
}

/** Reads a note from another node; anything malformed is ignored. */
function readNote(payload: string): Note | undefined {
  const note = readJsonObject(payload);
  if (note === undefined || typeof note.id !== "string") return undefined;
  if (note.t === "answer") return note as Note;
  if (note.t !== "change" || typeof note.from !== "string" || typeof note.plateId !== "string" || typeof note.clientId !== "string") return undefined;
  let change: Change | undefined;
  try {
    change = readChange(note.change);
  } catch {
    return undefined;
  }
  const asker = note.asker as Asker | undefined;
  const askerValid =
    asker !== undefined &&
    (asker.kind === "vouched" || (asker.kind === "token" && typeof asker.tokenHash === "string") || (asker.kind === "user" && typeof asker.sub === "string"));
  if (change === undefined || !askerValid) {
    return undefined;
  }
  return { t: "change", id: note.id, from: note.from, plateId: note.plateId, clientId: note.clientId, asker, change };
}

/**
 * Reads the body of route 9's POST (`{"subscribe":[…],"unsubscribe":[…]}`), validating every
 * entry; throws `bad_request` / `invalid_channel` naming what is wrong. Undefined-safe for notes.
 */
export function readChange(body: unknown, maxEntries = Number.MAX_SAFE_INTEGER): Change | undefined {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return undefined;
  const { subscribe = [], unsubscribe = [] } = body as Record<string, unknown>;
  if (!Array.isArray(subscribe) || !Array.isArray(unsubscribe)) return undefined;
  if (subscribe.length + unsubscribe.length > maxEntries) {
    throw new PlateError("bad_request", `A change may name at most ${maxEntries} subscriptions.`);
  }
  const entries = (list: unknown[], withSince: boolean) =>
    list.map((entry): SubscriptionRequest => {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
        throw new PlateError("bad_request", 'Each entry is {"channel":"…"} or {"pattern":"…"}.');
      }
      const record = entry as Record<string, unknown>;
      const name = readName(record);
      if ("code" in name) throw new PlateError(name.code, name.message);
      if (!withSince) return name;
      const filter = record.filter === undefined ? undefined : asFilterSpec(record.filter);
      if (record.filter !== undefined && filter === undefined) throw new PlateError("invalid_filter", FILTER_SHAPE_MESSAGE);
      if (record.since !== undefined && record.since !== "" && typeof record.since !== "string") {
        throw new PlateError("bad_request", '"since" must be a message id (a string).');
      }
      const since = typeof record.since === "string" && record.since !== "" ? record.since : undefined;
      return { ...name, ...(since === undefined ? {} : { since }), ...(filter === undefined ? {} : { filter }) };
    });
  return { subscribe: entries(subscribe, true), unsubscribe: entries(unsubscribe, false) };
}
