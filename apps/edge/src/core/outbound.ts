import { encodeEnvelope, encodeSseMessage } from "@plate/protocol";
import type { Message } from "@plate/protocol";

/**
 * One message made ready for the wire, shared by every local subscriber it goes to: the envelope is
 * serialized once, and each transport's bytes are built once, the first time a subscriber of that
 * transport needs them. Writing one shared Buffer to N sockets costs N writes and no copies;
 * writing a string would encode it N times.
 */
export class Outbound {
  readonly #envelope: string;
  readonly #id: Message["id"];
  #sse: Buffer | undefined;
  #ws: Buffer | undefined;

  constructor(message: Message) {
    this.#id = message.id;
    this.#envelope = encodeEnvelope(message);
  }

  /** The SSE event (`id:` and `data:` lines). */
  get sse(): Buffer {
    return (this.#sse ??= Buffer.from(encodeSseMessage(this.#id, this.#envelope), "utf8"));
  }

  /** The WebSocket text frame's payload: the envelope. */
  get ws(): Buffer {
    return (this.#ws ??= Buffer.from(this.#envelope, "utf8"));
  }
}
