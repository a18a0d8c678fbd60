import type { Socket } from "node:net";
import { ACCEPTED, CONNECTION_CLOSED } from "./publisher.js";
import { openRoute9 } from "./route9-socket.js";
import type { Target } from "./targets.js";
import { FrameCounter, FrameReader, OPCODE, maskedTextFrame } from "./ws-frames.js";

/**
 * What a paused watcher's socket reads ahead from the kernel, in bytes. A paused net.Socket still
 * reads every segment that arrives (a JS callback each) until its buffer holds its high-water
 * mark; at 4 MiB (`Subscriber`'s batch subscribers) that is a callback per diff per watcher. At
 * 1 byte it stops reading after one chunk and the kernel holds the rest (about 11 diffs of 150
 * bytes per watcher per drain at these rates, far within its receive buffer) until `drain()` reads
 * it in one go. Measured on W6 (1,000 watchers, embedded, 84–111 changes/s, alternating): the
 * harness 94–95% of its core at 4 MiB, 34% at 1 byte; the node's rate the same.
 */
const LAZY_READ_AHEAD_BYTES = 1;
const PRESENCE = '{"type":"presence",';
const DIFF = '"joins":';

/**
 * A route 9 client of presence (route 10) on a raw socket (`openRoute9`): `subscribe` (with
 * `presence:true` or not), `presence.track` and `presence.untrack`, one request in flight, each
 * answered by `ref` (`subscribed`/`ok`, or an error frame with its code); and, as a watcher, the
 * presence frames of its subscription.
 *
 * A watcher reads frames as they come until `startCounting`; from then on it counts diff frames,
 * either still reading each one (eager: `onDiff` gets its text, for order and latency) or paused
 * and drained in batches by `drain()`, counting frames from their headers only (`FrameCounter`):
 * a thousand watchers then cost the harness one read each per drain. Nothing but diffs comes to a
 * watcher while counting (no messages are published, pings are off, it sends no requests).
 */
export class PresenceClient {
  readonly #socket: Socket;
  readonly #reader: FrameReader;
  #counter: FrameCounter | undefined;
  #ref = 0;
  /** The answers to the request in flight: `{"type":"ok","ref":N}` and `{"type":"subscribed","ref":N,`. */
  #ok = "";
  #subscribed = "";
  #done: ((outcome: string) => void) | undefined;
  #closed = false;
  #diffs = 0;
  /** While counting eagerly: each diff frame's text. */
  #onDiff: ((text: string) => void) | undefined;

  private constructor(
    socket: Socket,
    /** Its `clientId`, from `ready`. */
    readonly clientId: string,
  ) {
    this.#socket = socket;
    this.#reader = new FrameReader((opcode, payload) => this.#onFrame(opcode, payload));
  }

  /** Opens a route 9 WebSocket on `target` from `localAddress`; `lazy` for a watcher drained in batches later. */
  static async open(target: Target, localAddress: string, lazy: boolean): Promise<PresenceClient> {
    const { socket, ready, rest } = await openRoute9(target, localAddress, lazy ? { readableHighWaterMark: LAZY_READ_AHEAD_BYTES } : {});
    const client = new PresenceClient(socket, /"clientId":"([^"]*)"/.exec(ready)?.[1] ?? "");
    socket.on("data", (data: Buffer) => client.#feed(data));
    socket.on("error", () => client.#end(CONNECTION_CLOSED));
    socket.on("close", () => client.#end(CONNECTION_CLOSED));
    client.#feed(rest);
    socket.resume();
    return client;
  }

  /** Whether the connection ended (the server closed it, or `close()`). */
  get closed(): boolean {
    return this.#closed || this.#counter?.closed === true;
  }

  /** Diff frames (`joins`/`leaves`) counted since `startCounting`. */
  get diffs(): number {
    return this.#counter?.text ?? this.#diffs;
  }

  /** Subscribes to `channel`, with its members and their changes when `presence`. Answers `ACCEPTED` or why not. */
  subscribe(channel: string, presence: boolean): Promise<string> {
    return this.#request((ref) => '{"type":"subscribe","ref":' + ref + ',"channel":"' + channel + '"' + (presence ? ',"presence":true}' : "}"));
  }

  /** Tracks this connection in `channel` with `state` (JSON text). */
  track(channel: string, state: string): Promise<string> {
    return this.#request((ref) => '{"type":"presence.track","ref":' + ref + ',"channel":"' + channel + '","state":' + state + "}");
  }

  untrack(channel: string): Promise<string> {
    return this.#request((ref) => '{"type":"presence.untrack","ref":' + ref + ',"channel":"' + channel + '"}');
  }

  /**
   * From now on counts diff frames from zero: reading each with `onDiff` (eager), or, without it,
   * paused until `drain()` reads what came, from the frames' headers. Call it while the channel is
   * quiet: a frame cut by the switch would be miscounted.
   */
  startCounting(onDiff?: (text: string) => void): void {
    this.#diffs = 0;
    if (onDiff !== undefined) {
      this.#onDiff = onDiff;
      return;
    }
    this.#counter = new FrameCounter();
    this.#socket.pause();
  }

  /** Reads what a watcher counting in batches has waiting (its 'data' listener counts it). */
  drain(): void {
    if (this.#counter === undefined || this.#closed) return;
    while (this.#socket.read() !== null);
  }

  close(): void {
    this.#socket.destroy();
    this.#end(CONNECTION_CLOSED);
  }

  #request(frame: (ref: number) => string): Promise<string> {
    if (this.#done !== undefined) throw new Error("PresenceClient: one request at a time");
    if (this.#closed) return Promise.resolve(CONNECTION_CLOSED);
    const ref = this.#ref++;
    this.#ok = '{"type":"ok","ref":' + ref + "}";
    this.#subscribed = '{"type":"subscribed","ref":' + ref + ",";
    const bytes = maskedTextFrame(frame(ref));
    return new Promise((resolve) => {
      this.#done = resolve;
      this.#socket.write(bytes);
    });
  }

  #feed(data: Buffer): void {
    if (this.#counter !== undefined) this.#counter.feed(data);
    else this.#reader.feed(data);
  }

  #onFrame(opcode: number, payload: Buffer): void {
    if (opcode === OPCODE.close) {
      this.#end(payload.length >= 2 ? `closed_${payload.readUInt16BE(0)}` : CONNECTION_CLOSED);
      this.#socket.destroy();
      return;
    }
    if (opcode !== OPCODE.text) return;
    const text = payload.toString("latin1");
    // The server writes `type` first and `ref` next: prefix tests answer without parsing.
    if (text.startsWith(PRESENCE)) {
      if (!text.includes(DIFF)) return;
      this.#diffs += 1;
      this.#onDiff?.(text);
      return;
    }
    if (this.#done === undefined) return;
    if (text === this.#ok || text.startsWith(this.#subscribed)) return this.#finish(ACCEPTED);
    const frame = JSON.parse(text) as { type?: string; ref?: number; error?: { code?: string } };
    if (frame.type === "error" && frame.ref === this.#ref - 1) this.#finish(frame.error?.code ?? "error");
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
