/**
 * The names of Plate's domain, as the spec defines them. Each is a branded string so a channel
 * cannot be passed where a plate id is expected; the only way to get one is through the guards
 * below, which apply the spec's grammar.
 */

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** A tenant's id: `^[A-Za-z0-9_-]{1,64}$`. */
export type PlateId = Brand<string, "PlateId">;
/** A concrete channel inside one plate: `^[A-Za-z0-9_.:@=~-]{1,200}$`. */
export type ChannelName = Brand<string, "ChannelName">;
/** A channel name that may also hold `*` (any run, possibly empty) and `?` (exactly one character). */
export type ChannelPattern = Brand<string, "ChannelPattern">;
/** An unguessable client token (route 4 mints it, route 5 spends it). */
export type ClientToken = Brand<string, "ClientToken">;
/** The id of a published message: opaque, unique within its plate. */
export type MessageId = Brand<string, "MessageId">;

const PLATE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const CHANNEL_NAME = /^[A-Za-z0-9_.:@=~-]{1,200}$/;
const CHANNEL_PATTERN = /^[A-Za-z0-9_.:@=~*?-]{1,200}$/;
/** Tokens are minted as 32 url-safe characters (192 bits); anything else cannot be one. */
const CLIENT_TOKEN = /^[A-Za-z0-9_-]{16,128}$/;

/** Whether `value` is a valid plate id. */
export function isPlateId(value: string): value is PlateId {
  return PLATE_ID.test(value);
}

/** Whether `value` is a valid concrete channel name (no wildcards). */
export function isChannelName(value: string): value is ChannelName {
  return CHANNEL_NAME.test(value);
}

/** Whether `value` is a valid channel pattern (a channel name is a pattern too). */
export function isChannelPattern(value: string): value is ChannelPattern {
  return CHANNEL_PATTERN.test(value);
}

/** Whether `value` has the shape of a client token (says nothing of whether it exists). */
export function isClientTokenShape(value: string): value is ClientToken {
  return CLIENT_TOKEN.test(value);
}

/** What a subscription listens to: one channel, or one pattern, always inside one plate. */
export type Topic =
  | { readonly plateId: PlateId; readonly pattern: false; readonly channel: ChannelName }
  | { readonly plateId: PlateId; readonly pattern: true; readonly channel: ChannelPattern };

/**
 * A string that identifies a topic, for maps. The plate id cannot contain `/`, so the key of one
 * plate's topic can never equal another plate's, whatever the channel text.
 */
export function topicKey(topic: Topic): string {
  return `${topic.plateId}/${topic.pattern ? "p" : "c"}/${topic.channel}`;
}
