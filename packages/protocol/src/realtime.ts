import { PlateError } from "./errors.js";
import type { ErrorCode } from "./errors.js";
import { isChannelName, isChannelPattern } from "./names.js";
import type { ChannelName, ChannelPattern } from "./names.js";
import type { ResetReason } from "./positions.js";

/**
 * The wire of route 9 (v2): one connection, many subscriptions. A subscription is named on the wire
 * by `{"channel":"a"}` or `{"pattern":"user:*"}`; every reply names it the same way.
 */

/** A frame's `ref`: a string of at most `MAX_REF_CHARS` characters, or a safe integer, echoed as given. */
export type Ref = string | number;

/** Longest `ref` string a client may send (a longer one is `bad_request`). */
export const MAX_REF_CHARS = 128;

/** What a subscription listens to, as the wire names it. */
export type SubscriptionName = { readonly channel: ChannelName } | { readonly pattern: ChannelPattern };

/** A subscription in `ready` and in route 9's POST answer: its name and where it starts. */
export type SubscriptionInfo = SubscriptionName & {
  /** Its starting position in the plate's history (the head when it subscribed). */
  readonly position?: string;
};

/** The first frame of a route 9 connection. */
export interface RealtimeReadyFrame {
  readonly type: "ready";
  readonly clientId: string;
  readonly subscriptions: readonly SubscriptionInfo[];
}

/** The answer to `subscribe`; with `since`, the missed messages (or one `reset`) follow it. */
export type SubscribedFrame = { readonly type: "subscribed"; readonly ref?: Ref; readonly position?: string } & SubscriptionName;

/**
 * The answer to `unsubscribe`, or news that a subscription ended without one (`reason`): nothing
 * more is delivered for it.
 */
export type UnsubscribedFrame = { readonly type: "unsubscribed"; readonly ref?: Ref; readonly reason?: ErrorCode } & SubscriptionName;

/** One subscription may have missed messages: refetch its state; live messages follow. */
export type RealtimeResetFrame = { readonly type: "reset"; readonly reason: ResetReason; readonly message: string } & SubscriptionName;

/** A refused request: the connection stays open. */
export interface RefusalFrame {
  readonly type: "error";
  readonly ref?: Ref;
  readonly error: { readonly code: ErrorCode; readonly message: string };
}

/** What a route 9 connection says besides messages. */
export type RealtimeServerFrame =
  | RealtimeReadyFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | RealtimeResetFrame
  | RefusalFrame
  | { readonly type: "pong"; readonly ref?: Ref }
  /** A message published from the connection: its id. */
  | { readonly type: "published"; readonly ref?: Ref; readonly id: string }
  /** A request done that answers nothing more (a refreshed token). */
  | { readonly type: "ok"; readonly ref?: Ref };

/**
 * A subscription's filter as the client wrote it (route 13): a Koncorde filter, one JSON object.
 * Only its shape is checked here; what it means is checked where it is compiled (the edge).
 */
export type FilterSpec = Readonly<Record<string, unknown>>;

/** A subscription asked for: its name, the id to resume after, and the filter its messages must match. */
export type SubscriptionRequest = SubscriptionName & { readonly since?: string; readonly filter?: FilterSpec };

/** `value` as a filter: a JSON object (not an array, not null); undefined when it is not one. */
export function asFilterSpec(value: unknown): FilterSpec | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as FilterSpec) : undefined;
}

/**
 * A filter from a query parameter (`?filter=`, `?filter.<name>=`): JSON text of one object.
 * Absent or empty: none. Throws `invalid_filter` for anything else.
 */
export function readFilterParam(text: string | null | undefined): FilterSpec | undefined {
  if (text === null || text === undefined || text === "") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new PlateError("invalid_filter", `The filter is not JSON. ${FILTER_SHAPE_MESSAGE}`);
  }
  const filter = asFilterSpec(value);
  if (filter === undefined) throw new PlateError("invalid_filter", FILTER_SHAPE_MESSAGE);
  return filter;
}

/** Why a filter that is not a JSON object is refused. */
export const FILTER_SHAPE_MESSAGE = 'A "filter" is one JSON object in Koncorde\'s syntax, e.g. {"equals":{"status":"paid"}}.';

/**
 * A message a client publishes from its connection: `body` is the JSON text of its `message`,
 * `event` a name as for channels.
 */
export interface PublishFrame {
  readonly type: "publish";
  readonly ref?: Ref;
  readonly channel: ChannelName;
  readonly body: string;
  readonly event?: string;
  /** The JSON text of its `volatile` metadata (route 13), when it has some. */
  readonly volatile?: string;
}

/** What a client may send on a route 9 WebSocket. */
export type RealtimeClientFrame =
  | ({ readonly type: "subscribe"; readonly ref?: Ref; readonly self?: false; readonly presence?: true } & SubscriptionRequest)
  | PublishFrame
  /** `state`: the JSON text of the member's state. */
  | { readonly type: "presence.track"; readonly ref?: Ref; readonly channel: ChannelName; readonly state: string }
  | { readonly type: "presence.untrack"; readonly ref?: Ref; readonly channel: ChannelName }
  | ({ readonly type: "unsubscribe"; readonly ref?: Ref } & SubscriptionName)
  | { readonly type: "auth"; readonly ref?: Ref; readonly key: string; readonly signed?: true }
  | { readonly type: "ping"; readonly ref?: Ref };

/** A frame that could not be read: answered with an error frame carrying its `ref`, when it had a readable one. */
export interface UnreadableFrame {
  readonly type: "unreadable";
  readonly ref?: Ref;
  readonly code: ErrorCode;
  readonly message: string;
}

/**
 * Reads one route 9 client frame. Anything that is not a frame of the table (not JSON, an unknown
 * type, a bad name) comes back as `unreadable`, with the frame's `ref` when it had a usable one, so
 * the refusal can name the request it answers. Never throws.
 */
export function parseRealtimeFrame(text: string): RealtimeClientFrame | UnreadableFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return unreadable(undefined, "bad_request", "A frame is one JSON object.");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return unreadable(undefined, "bad_request", "A frame is one JSON object.");
  }
  const frame = value as Record<string, unknown>;
  const ref = frame.ref;
  if (ref !== undefined && !isRef(ref)) {
    return unreadable(undefined, "bad_request", `"ref" must be a string of at most ${MAX_REF_CHARS} characters or an integer.`);
  }
  const refField = ref === undefined ? {} : { ref };
  switch (frame.type) {
    case "ping":
      return { type: "ping", ...refField };
    case "auth": {
      if (typeof frame.token === "string") return { type: "auth", ...refField, key: frame.token, signed: true };
      const key = typeof frame.key === "string" ? frame.key : frame.auth;
      if (typeof key !== "string") return unreadable(ref, "bad_request", 'An auth frame is {"type":"auth","token":"<signed client token>"} or {"type":"auth","key":"<API key>"}.');
      return { type: "auth", ...refField, key };
    }
    case "subscribe": {
      const name = readName(frame);
      if ("code" in name) return unreadable(ref, name.code, name.message);
      if (frame.since !== undefined && typeof frame.since !== "string") return unreadable(ref, "bad_request", '"since" must be a message id (a string).');
      if (frame.self !== undefined && typeof frame.self !== "boolean") return unreadable(ref, "bad_request", '"self" is true (the default: receive your own publications) or false.');
      if (frame.presence !== undefined && typeof frame.presence !== "boolean") return unreadable(ref, "bad_request", '"presence" is true (receive the channel\'s members and their changes) or false.');
      if (frame.presence === true && !("channel" in name)) return unreadable(ref, "bad_request", "Presence is per channel: a pattern subscription cannot ask for it.");
      const filter = frame.filter === undefined ? undefined : asFilterSpec(frame.filter);
      if (frame.filter !== undefined && filter === undefined) return unreadable(ref, "invalid_filter", FILTER_SHAPE_MESSAGE);
      return {
        type: "subscribe",
        ...refField,
        ...name,
        ...(typeof frame.since === "string" && frame.since !== "" ? { since: frame.since } : {}),
        ...(frame.self === false ? { self: false } : {}),
        ...(frame.presence === true ? { presence: true } : {}),
        ...(filter === undefined ? {} : { filter }),
      };
    }
    case "presence.track":
    case "presence.untrack": {
      const { channel } = frame;
      if (typeof channel !== "string" || !isChannelName(channel)) {
        return unreadable(ref, "invalid_channel", 'A presence frame names one "channel": 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ and -.');
      }
      if (frame.type === "presence.untrack") return { type: "presence.untrack", ...refField, channel };
      if (!("state" in frame)) return unreadable(ref, "bad_request", 'A presence.track frame carries a "state" (any JSON value; null counts when written).');
      return { type: "presence.track", ...refField, channel, state: JSON.stringify(frame.state) };
    }
    case "publish": {
      const { channel, event } = frame;
      if (typeof channel !== "string" || !isChannelName(channel)) {
        return unreadable(ref, "invalid_channel", 'A publish frame names one "channel": 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ and -.');
      }
      if (!("message" in frame)) return unreadable(ref, "bad_request", 'A publish frame carries a "message" (any JSON value; null counts when written).');
      if (event !== undefined && (typeof event !== "string" || !isChannelName(event))) {
        return unreadable(ref, "invalid_parameter", '"event" is a name of 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ and -.');
      }
      return {
        type: "publish",
        ...refField,
        channel,
        body: JSON.stringify(frame.message),
        ...(event === undefined ? {} : { event }),
        ...("volatile" in frame ? { volatile: JSON.stringify(frame.volatile) } : {}),
      };
    }
    case "unsubscribe": {
      const name = readName(frame);
      if ("code" in name) return unreadable(ref, name.code, name.message);
      return { type: "unsubscribe", ...refField, ...name };
    }
    default:
      // The v1 auth frame (`{"auth":"<key>"}`, no type) is also accepted as the first frame.
      if (frame.type === undefined && typeof frame.auth === "string") return { type: "auth", ...refField, key: frame.auth };
      return unreadable(ref, "bad_request", "Unknown frame type; see route 9 of the API reference.");
  }
}

/** `{"channel":…}` or `{"pattern":…}` of a frame or a POST entry, validated; or why not. */
export function readName(entry: Readonly<Record<string, unknown>>): SubscriptionName | { code: ErrorCode; message: string } {
  const { channel, pattern } = entry;
  if ((channel === undefined) === (pattern === undefined)) {
    return { code: "bad_request", message: 'Name one "channel" or one "pattern".' };
  }
  if (channel !== undefined) {
    if (typeof channel !== "string" || !isChannelName(channel)) {
      return { code: "invalid_channel", message: "A channel name has 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ and -." };
    }
    return { channel };
  }
  if (typeof pattern !== "string" || !isChannelPattern(pattern)) {
    return { code: "invalid_channel", message: "A channel pattern has 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ - and the wildcards * and ?." };
  }
  return { pattern };
}

function isRef(value: unknown): value is Ref {
  return (typeof value === "string" && value.length <= MAX_REF_CHARS) || (typeof value === "number" && Number.isSafeInteger(value));
}

function unreadable(ref: unknown, code: ErrorCode, message: string): UnreadableFrame {
  return isRef(ref) ? { type: "unreadable", ref, code, message } : { type: "unreadable", code, message };
}

/** A route 9 server frame as JSON text. */
export function encodeRealtimeFrame(frame: RealtimeServerFrame): string {
  return JSON.stringify(frame);
}
