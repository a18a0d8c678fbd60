import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import type { Socket } from "node:net";
import type { Target } from "./targets.js";
import { frameEnd } from "./ws-frames.js";

/** How long the upgrade and the `ready` frame may take, in ms. */
const OPEN_TIMEOUT_MS = 30_000;
const HEAD_END = Buffer.from("\r\n\r\n");
const READY = '"type":"ready"';

/** A route 9 WebSocket past its handshake. */
export interface OpenedRoute9 {
  /** Paused, with no listeners of the handshake's left: the caller adds its own, then resumes it (or drains it). */
  readonly socket: Socket;
  /** The text of the `ready` frame (it names the connection's `clientId`). */
  readonly ready: string;
  /** Bytes that came after the `ready` frame with it (usually none: the server waits for requests). */
  readonly rest: Buffer;
}

/**
 * Opens Plate's route 9 WebSocket (`GET /{plateId}/realtime`, the target's key) on a raw socket
 * from `localAddress`: the upgrade written by hand, the answer's head read, then the first frame,
 * which must be `ready`. Rejects on another status, another first frame, a close or
 * `OPEN_TIMEOUT_MS`. `readableHighWaterMark` is for sockets drained in batches (see `Subscriber`).
 */
export function openRoute9(target: Target, localAddress: string, options: { readableHighWaterMark?: number } = {}): Promise<OpenedRoute9> {
  const route = target.wsPublish;
  if (route === undefined) return Promise.reject(new Error(`${target.name} has no route 9 WebSocket the harness speaks`));
  const socket = connect({ host: target.host, port: target.port, localAddress, ...options });
  socket.setNoDelay(true);
  socket.write(
    `GET ${route.path} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n${route.headers}\r\n`,
  );
  return new Promise((resolve, reject) => {
    let bytes = Buffer.alloc(0);
    /** Where the frames begin once the head is read. */
    let framesAt = -1;
    const timer = setTimeout(() => fail(new Error(`route 9 WebSocket not ready within ${OPEN_TIMEOUT_MS} ms`)), OPEN_TIMEOUT_MS);
    const done = () => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", onError);
    };
    const fail = (err: Error) => {
      done();
      socket.destroy();
      reject(err);
    };
    const onClose = () => fail(new Error(`closed before ready: ${bytes.toString("latin1", 0, 300)}`));
    const onError = (err: Error) => fail(err);
    const onData = (chunk: Buffer) => {
      bytes = Buffer.concat([bytes, chunk]);
      if (framesAt === -1) {
        const headEnd = bytes.indexOf(HEAD_END);
        if (headEnd === -1) return;
        const status = Number(bytes.toString("latin1", 9, 12));
        if (status !== 101) return fail(new Error(`status ${status}: ${bytes.toString("latin1", 0, 300)}`));
        framesAt = headEnd + HEAD_END.length;
      }
      const end = frameEnd(bytes, framesAt);
      if (end === -1) return;
      const header = (bytes[framesAt + 1]! & 0x7f) === 126 ? 4 : (bytes[framesAt + 1]! & 0x7f) === 127 ? 10 : 2;
      const ready = bytes.toString("latin1", framesAt + header, end);
      if (!ready.includes(READY)) return fail(new Error(`not ready: ${ready.slice(0, 300)}`));
      done();
      socket.pause();
      resolve({ socket, ready, rest: bytes.subarray(end) });
    };
    socket.on("data", onData);
    socket.on("close", onClose);
    socket.on("error", onError);
  });
}
