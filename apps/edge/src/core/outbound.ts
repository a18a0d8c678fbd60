import { encodeEnvelope, encodeSseMessage, parsePosition } from "@plate/protocol";
import type { Message, Position } from "@plate/protocol";

/**
 * One message made ready for the wire, shared by every local subscriber it goes to: the envelope is
 * serialized once, and each transport's bytes are built once, the first time a subscriber of that
 * transport needs them. Writing one shared Buffer to N sockets costs N writes and no copies;
 * writing a string would encode it N times.
 */
export class Outbound {
  readonly #envelope: string;
  readonly #id: Message["id"];
  /** The concrete channel it was published to. */
  readonly channel: Message["channel"];
  /** The client id of the connection that published it, if a client did (for `self:false`). */
  readonly sender: string | undefined;
  #sse: Buffer | undefined;
  #wsFrame: Buffer | undefined;
  #position: Position | null | undefined;

  constructor(message: Message) {
    this.#id = message.id;
    this.channel = message.channel;
    this.sender = message.from?.clientId;
    this.#envelope = encodeEnvelope(message);
  }

  /** The message's id. */
  get id(): Message["id"] {
    return this.#id;
  }

  /**
   * The message's position in the history (`null` for an id that is not one), parsed once, the
   * first time a subscriber needs it (one that has just resumed, see `Connection`).
   */
  get position(): Position | null {
    if (this.#position === undefined) this.#position = parsePosition(this.#id) ?? null;
    return this.#position;
  }

  /** The SSE event (`id:` and `data:` lines). */
  get sse(): Buffer {
    return (this.#sse ??= Buffer.from(encodeSseMessage(this.#id, this.#envelope), "utf8"));
  }

  /**
   * The whole WebSocket text frame (header and payload, unmasked as a server sends it), written
   * as is to every WebSocket subscriber's socket: `ws`'s `send` built and wrote a header per
   * subscriber per message.
   */
  get wsFrame(): Buffer {
    return (this.#wsFrame ??= textFrame(this.#envelope));
  }
}

/**
 * A control frame written to many connections (a presence change to every watcher of a channel):
 * as `Outbound` does for messages, each transport's bytes are built once, the first time a
 * connection of that transport needs them, and shared.
 */
export class SharedFrame {
  #sse: Buffer | undefined;
  #wsFrame: Buffer | undefined;

  constructor(
    readonly type: string,
    readonly json: string,
  ) {}

  /** The SSE event (`event:` and `data:` lines). */
  get sse(): Buffer {
    return (this.#sse ??= Buffer.from("event: " + this.type + "\ndata: " + this.json + "\n\n", "utf8"));
  }

  /** The whole WebSocket text frame. */
  get wsFrame(): Buffer {
    return (this.#wsFrame ??= textFrame(this.json));
  }
}

/** Opcode 0x1 (text) with FIN set. */
const FIN_TEXT = 0x81;

/** An unmasked, unfragmented WebSocket text frame carrying `text` (RFC 6455, 5.2), encoded once into it. */
function textFrame(text: string): Buffer {
  const length = Buffer.byteLength(text, "utf8");
  const headerBytes = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerBytes + length);
  frame[0] = FIN_TEXT;
  if (headerBytes === 2) {
    frame[1] = length;
  } else if (headerBytes === 4) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  frame.write(text, headerBytes, "utf8");
  return frame;
}
