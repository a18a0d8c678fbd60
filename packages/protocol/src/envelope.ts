import type { ChannelName, MessageId, PlateId } from "./names.js";

/**
 * A published message as it travels through the broker. `body` is the JSON text of the published
 * value, serialized once at publish time; every transport embeds it as it is.
 */
export interface Message {
  readonly plateId: PlateId;
  readonly channel: ChannelName;
  readonly id: MessageId;
  /** ISO-8601 time the publishing node accepted the message. */
  readonly timestamp: string;
  /** The published value as JSON text. */
  readonly body: string;
  /** The event name the publisher gave (a name as for channels), if any. */
  readonly event?: string;
  /** Who published it, when a client did over a realtime connection (route 9's `publish` frame). */
  readonly from?: Sender;
  /**
   * The publisher's `volatile` metadata as JSON text (route 13): delivered live, in the envelope,
   * and never kept in the history (a replayed message has none).
   */
  readonly volatile?: string;
}

/** The client that published a message from its connection: its client id, and its user when its token named one (`sub`). */
export interface Sender {
  readonly clientId: string;
  readonly user?: string;
}

/** The envelope every subscriber receives, as the spec writes it. */
export interface Envelope {
  readonly type: "message";
  readonly id: string;
  readonly channel: string;
  /** Present when the publisher named an event. */
  readonly event?: string;
  /** Present when a client published it from its connection. */
  readonly from?: Sender;
  readonly message: unknown;
  /** Present when the publisher gave `volatile` metadata and the message was delivered live. */
  readonly volatile?: unknown;
  readonly timestamp: string;
}

/**
 * The envelope as JSON text, built by concatenation so `body` is not parsed and re-serialized.
 * Safe without escaping: ids are url-safe, channels and event names match `[A-Za-z0-9_.:@=~-]`,
 * timestamps are ISO strings, and `body` is already valid JSON. `from` holds a user id (any text),
 * so it is serialized as JSON.
 */
export function encodeEnvelope(message: Message): string {
  return (
    '{"type":"message","id":"' +
    message.id +
    '","channel":"' +
    message.channel +
    (message.event === undefined ? "" : '","event":"' + message.event) +
    (message.from === undefined ? '",' : '","from":' + JSON.stringify(message.from) + ",") +
    '"message":' +
    message.body +
    (message.volatile === undefined ? "" : ',"volatile":' + message.volatile) +
    ',"timestamp":"' +
    message.timestamp +
    '"}'
  );
}

/** The SSE event carrying one message: `id:` then `data:` (the envelope is one line of JSON). */
export function encodeSseMessage(id: MessageId, envelope: string): string {
  return "id: " + id + "\ndata: " + envelope + "\n\n";
}

/**
 * Turns a payload that reached the broker another way (a backend publishing straight into it) into
 * a message body: JSON text when it parses, otherwise the payload as a JSON string.
 */
export function bodyFromForeignPayload(payload: string): string {
  try {
    JSON.parse(payload);
    // A raw CR or LF in valid JSON can only be whitespace between tokens; folding it keeps the
    // envelope on one SSE `data:` line and every number's text exactly as it was published.
    return payload.trim().replace(/[\r\n]+/g, " ");
  } catch {
    return JSON.stringify(payload);
  }
}
