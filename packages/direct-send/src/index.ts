import { createRequire } from "node:module";

/**
 * The addon's one function: a non-blocking send(2) of all of `bytes` to the socket `fd`.
 * Answers undefined when the kernel took them all; otherwise the bytes it took (fewer than
 * asked when its send buffer filled), or a negative errno (`-EAGAIN` when it took none,
 * `-EPIPE`/`-ECONNRESET` when the peer is gone, `-EINVAL` for bad arguments). Never throws,
 * never blocks. (Undefined rather than the count: a number costs the call a V8 handle, see
 * native/direct_send.c.)
 */
export interface DirectSend {
  send(this: void, fd: number, bytes: Uint8Array): number | undefined;
  /**
   * `send(fd, bytes)` for each of the first `count` of `fds`, in order, each answer (the bytes
   * taken, or a negative errno) into the same place of `results`. Answers how many were not sent
   * whole (0 when every one was), or `-EINVAL` (having sent nothing) for bad arguments.
   */
  sendMany(this: void, fds: Int32Array, count: number, bytes: Uint8Array, results: Int32Array): number;
}

/** Where the addon is: node-gyp's build, one level above `dist/` and `src/`. */
const ADDON = "../build/Release/direct_send.node";

function load(): { addon: DirectSend | undefined; reason: string | undefined } {
  if (process.platform === "win32") return { addon: undefined, reason: "not built on Windows (no file descriptors)" };
  try {
    const addon = createRequire(import.meta.url)(ADDON) as DirectSend;
    return { addon, reason: undefined };
  } catch (err) {
    return { addon: undefined, reason: `the native addon did not load (${(err as Error).message.split("\n")[0]}); run npm install with a C compiler at hand` };
  }
}

const loaded = load();

/** The addon, or undefined where it did not build or load (see `unavailable`). */
export const directSend: DirectSend | undefined = loaded.addon;

/** Why `directSend` is undefined, for the node's start-up log; undefined when it loaded. */
export const unavailable: string | undefined = loaded.reason;
export { closeDirectBatch, flushDirectFor, openDirectBatch, sendDirect } from "./send-direct.js";
export type { FdMemo } from "./send-direct.js";
