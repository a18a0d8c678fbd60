import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import type { Socket } from "node:net";
import { ACCEPTED, CONNECTION_CLOSED } from "./publisher.js";
import type { Publisher } from "./publisher.js";
import type { Target } from "./targets.js";
import { FrameReader, OPCODE, maskedTextFrame } from "./ws-frames.js";

/** How long the upgrade and the `ready` frame may take, in ms. */
const OPEN_TIMEOUT_MS = 30_000;
const HEAD_END = Buffer.from("\r\n\r\n");
const READY = '"type":"ready"';

/**
 * A client that publishes over Plate's route 9 WebSocket, on a raw socket: the upgrade written by
 * hand, `{"type":"publish","ref":N,"channel":...,"message":...}` sent as a masked text frame
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
  /** Until the first frame came: called with it (route 9 begins with `ready`). */
  #whenReady: ((firstText: string) => void) | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    this.#reader = new FrameReader((opcode, payload) => this.#onFrame(opcode, payload));
  }

  /** Opens a route 9 WebSocket on `target` from `localAddress`; resolves once it is `ready`. */
  static open(target: Target, localAddress: string): Promise<WsPublisher> {
    const route = target.wsPublish;
    if (route === undefined)
      return Promise.reject(new Error(`${target.name} has no WebSocket publish the harness speaks`));
    const socket = connect({ host: target.host, port: target.port, localAddress });
    socket.setNoDelay(true);
    const publisher = new WsPublisher(socket);
    socket.write(
      `GET ${route.path} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n${route.headers}\r\n`,
    );
    return new Promise((resolve, reject) => {
      let head = Buffer.alloc(0);
      const timer = setTimeout(
        () => fail(new Error(`route 9 WebSocket not ready within ${OPEN_TIMEOUT_MS} ms`)),
        OPEN_TIMEOUT_MS,
      );
      const fail = (err: Error) => {
        clearTimeout(timer);
        publisher.#whenReady = undefined;
        socket.destroy();
        reject(err);
      };
      const onClose = () => fail(new Error(`closed before ready: ${head.toString("latin1", 0, 300)}`));
      publisher.#whenReady = (text) => {
        if (!text.includes(READY)) return fail(new Error(`not ready: ${text.slice(0, 300)}`));
        clearTimeout(timer);
        socket.off("close", onClose);
        socket.on("close", () => publisher.#end(CONNECTION_CLOSED));
        resolve(publisher);
      };
      const onHandshake = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const headEnd = head.indexOf(HEAD_END);
        if (headEnd === -1) return;
        const status = Number(head.toString("latin1", 9, 12));
        if (status !== 101) return fail(new Error(`status ${status}: ${head.toString("latin1", 0, 300)}`));
        socket.off("data", onHandshake);
        socket.on("data", (data: Buffer) => publisher.#reader.feed(data));
        publisher.#reader.feed(head.subarray(headEnd + HEAD_END.length));
      };
      socket.on("data", onHandshake);
      socket.on("error", () => publisher.#end(CONNECTION_CLOSED));
      socket.on("close", onClose);
    });
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
    if (this.#whenReady !== undefined) {
      const ready = this.#whenReady;
      this.#whenReady = undefined;
      return ready(text);
    }
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
