import type { Writable } from "node:stream";
import type { DirectSend } from "./index.js";

/** What a connected `net.Socket` keeps of its libuv stream (Node's `TCPWrap`): its file descriptor. */
interface StreamHandle {
  readonly fd: number;
}

/**
 * A socket's file descriptor once read (`sendDirect`), kept by its writer: one per socket, made by
 * the caller as `{ fd: undefined }`.
 */
export interface FdMemo {
  fd: number | undefined;
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
 * The fd is read from the socket's handle at its first direct write and kept in `memo`: `fd` is a
 * call into C++ that reads libuv's handle, cold memory for a socket written once per fan-out (4% of
 * the node's CPU at W1, perf), and `_handle` is a getter whose load (`this[kHandle]`, shared by
 * every socket of the process) is megamorphic: 8% of the node's user-space instructions per
 * delivery (load-tests instructions.js, W1). The number stays this socket's while the socket is
 * `writable`: a socket closes its descriptor only in `destroy`, which makes it not writable in
 * the same call, so a closed socket's kept number (which a later connection may reuse) is never
 * written to.
 */
export function sendDirect(send: DirectSend, socket: Writable, bytes: Buffer, memo: FdMemo): boolean {
  if (socket.writableLength !== 0 || socket.writableCorked !== 0 || !socket.writable) return false;
  let fd = memo.fd;
  if (fd === undefined) {
    const handle = (socket as { _handle?: StreamHandle | null })._handle;
    if (handle == null) return false;
    fd = memo.fd = handle.fd;
  }
  if (!(fd >= 0)) return false;
  const sent = send.send(fd, bytes);
  if (sent === undefined) return true;
  socket.write(sent > 0 ? bytes.subarray(sent) : bytes);
  return true;
}
