import type { Writable } from "node:stream";
import type { DirectSend } from "./index.js";

/** Where a handle keeps its file descriptor once read (see `sendDirect`). */
const FD = Symbol("plate.fd");

/** What a connected `net.Socket` keeps of its libuv stream (Node's `TCPWrap`): its file descriptor. */
interface StreamHandle {
  readonly fd: number;
  [FD]?: number;
}

/**
 * Writes `bytes` to `socket` with one send(2) on its file descriptor (`SUBSCRIBER_DIRECT_SEND`),
 * when nothing is waiting before them, so that these go out in order: Node holds no bytes of the
 * socket, neither buffered nor corked nor in libuv's queue (`writableLength` counts a write until
 * libuv has handed all of it to the kernel; libuv's own `writeQueueSize` is not read: a call into
 * C++ that was 4% of the node's samples at W1). What the kernel did not
 * take goes through `socket.write` after them, and so does everything until Node's queue is empty
 * again: a full send buffer or a peer that is gone is Node's to handle, as for any write. Answers
 * false, having written nothing, when the socket is not such a stream (then the caller writes).
 *
 * Why: at W1 (1,000 subscribers of a channel) a delivery is one write of a shared Buffer, and
 * `socket.write` spends more of the node's CPU on the way to the kernel (Writable's bookkeeping, a
 * `WriteWrap` per write, `StreamBase::WriteBuffer`, the after-write tick) than on it: 1,000 sockets
 * with Nagle, 210 bytes each, 0.48 µs user + 1.34 µs system a write through `socket.write`, 0.20 +
 * 1.09 µs with this (docs/performance.md, issue 18).
 *
 * The fd belongs to the socket's live handle: a closed socket lets its handle go (`_handle` null)
 * in the same call that closes the descriptor, so a number read from (or kept on) the handle found
 * here is this socket's, never a later connection's that reuses the number.
 */
export function sendDirect(send: DirectSend, socket: Writable, bytes: Buffer): boolean {
  const handle = (socket as { _handle?: StreamHandle | null })._handle;
  if (handle == null || socket.writableLength !== 0 || socket.writableCorked !== 0 || !socket.writable) return false;
  // `fd` is a call into C++ that reads libuv's handle, cold memory for a socket written once per
  // fan-out: 4% of the node's CPU at W1 (perf). Its number is kept on the handle object, which
  // the socket lets go in the same call that closes the descriptor.
  let fd = handle[FD];
  if (fd === undefined) fd = handle[FD] = handle.fd;
  if (!(fd >= 0)) return false;
  const sent = send.send(fd, bytes);
  if (sent === bytes.length) return true;
  socket.write(sent > 0 ? bytes.subarray(sent) : bytes);
  return true;
}
