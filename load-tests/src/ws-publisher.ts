import type { Socket } from "node:net";
import { ACCEPTED, CONNECTION_CLOSED } from "./publisher.js";
import type { Publisher } from "./publisher.js";
import { openRoute9 } from "./route9-socket.js";
import type { Target } from "./targets.js";
import { FrameReader, OPCODE, maskedTextFrame } from "./ws-frames.js";

/**
 * A client that publishes over Plate's route 9 WebSocket, on a raw socket: the upgrade written by
 * hand (`openRoute9`), `{"type":"publish","ref":N,"channel":...,"message":...}` sent as a masked text frame
 * (`maskedTextFrame`), and the answer read from the server's frames: `{"type":"published",
 * "ref":N,...}` or `{"type":"error","ref":N,"error":{"code":...}}`. One request in flight, like
 * `HttpPublisher`: the server carries out one connection's requests one at a time anyway, so more
 * in flight would only wait in its line. The connection subscribes to nothing, so answers are all
 * it receives; the servers' pings are off during benchmarks and are not answered.
 */
export class WsPublisher implements Publisher {
  readonly #socket: Socket;
  readonly #reader: FrameReader;
  #ref = 0;
  /** The start of the answer to the request in flight, `{"type":"published","ref":N,`. */
  #expected = "";
  #done: ((outcome: string) => void) | undefined;
  #closed = false;

  private constructor(socket: Socket) {
    this.#socket = socket;
    this.#reader = new FrameReader((opcode, payload) => this.#onFrame(opcode, payload));
  }

  /** Opens a route 9 WebSocket on `target` from `localAddress`; resolves once it is `ready`. */
  static async open(target: Target, localAddress: string): Promise<WsPublisher> {
    const { socket, rest } = await openRoute9(target, localAddress);
    const publisher = new WsPublisher(socket);
    socket.on("data", (data: Buffer) => publisher.#reader.feed(data));
    socket.on("error", () => publisher.#end(CONNECTION_CLOSED));
    socket.on("close", () => publisher.#end(CONNECTION_CLOSED));
    publisher.#reader.feed(rest);
    socket.resume();
    return publisher;
  }

  get busy(): boolean {
    return this.#done !== undefined;
  }

  publish(channel: string, payload: string): Promise<string> {
    if (this.#done !== undefined) throw new Error("WsPublisher: one request at a time");
    if (this.#closed) return Promise.resolve(CONNECTION_CLOSED);
    const ref = this.#ref++;
    this.#expected = '{"type":"published","ref":' + ref + ",";
    const frame = maskedTextFrame(
      '{"type":"publish","ref":' + ref + ',"channel":"' + channel + '","message":' + payload + "}",
    );
    return new Promise((resolve) => {
      this.#done = resolve;
      this.#socket.write(frame);
    });
  }

  close(): void {
    this.#socket.destroy();
    this.#end(CONNECTION_CLOSED);
  }

  #onFrame(opcode: number, payload: Buffer): void {
    if (opcode === OPCODE.close) {
      this.#end(payload.length >= 2 ? `closed_${payload.readUInt16BE(0)}` : CONNECTION_CLOSED);
      this.#socket.destroy();
      return;
    }
    if (opcode !== OPCODE.text) return;
    const text = payload.toString("latin1");
    // The server writes `type` first and `ref` next: a prefix test answers the common case
    // without parsing it.
    if (text.startsWith(this.#expected)) return this.#finish(ACCEPTED);
    const frame = JSON.parse(text) as { type?: string; ref?: number; error?: { code?: string } };
    if (frame.type === "error") this.#finish(frame.error?.code ?? "error");
    else if (frame.type === "published") this.#finish("wrong_ref");
  }

  #end(outcome: string): void {
    this.#closed = true;
    this.#finish(outcome);
  }

  #finish(outcome: string): void {
    const done = this.#done;
    this.#done = undefined;
    done?.(outcome);
  }
}
