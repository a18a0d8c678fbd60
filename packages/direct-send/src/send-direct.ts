import type { Writable } from "node:stream";
import type { DirectSend } from "./index.js";

/** What a connected `net.Socket` keeps of its libuv stream (Node's `TCPWrap`): its file descriptor. */
interface StreamHandle {
  readonly fd: number;
}

/**
 * A socket's file descriptor once read (`sendDirect`), kept by its writer: one per socket, made by
 * the caller as `{ fd: undefined, batch: 0 }`.
 */
export interface FdMemo {
  fd: number | undefined;
  /** The batch the socket has a write in (see `openDirectBatch`), or an earlier one's number. */
  batch: number;
}

/**
 * Most direct writes a batch holds before it sends them (one `sendMany` call). A held write waits
 * for the ones after it to be queued: at about 1 µs of JavaScript a subscriber, 64 keep that under
 * a tenth of a millisecond, while the call's own cost is shared by 64.
 */
export const DIRECT_BATCH_MAX = 64;

/**
 * The writes an outermost batch (`openDirectBatch`) sends in its first call; each call after sends
 * up to twice as many as the one before, up to `DIRECT_BATCH_MAX`. A fan-out's first subscribers
 * get their message as soon as the first few are queued, not after 64: at W1 (load-tests, 1,000
 * subscribers, a message every 10 ms) the 64 took 50-58 µs of a node gone cold between messages, a
 * fifth of the 250 µs from reading the publish to its first send (Nginx took 41 µs for Nchan).
 * Ramping up costs a 1,000-subscriber fan-out three calls more (19 instead of 16). A batch sends
 * as soon as it holds as many as its call takes.
 */
export const DIRECT_BATCH_FIRST = 4;

/** The writes of the open batch, to send in order: each to `fds[i]` (socket `sockets[i]`), all of `bytes`. */
const batch = {
  depth: 0,
  /** How many writes the batch sends in its next call (`DIRECT_BATCH_FIRST`, doubling up to `DIRECT_BATCH_MAX`). */
  limit: DIRECT_BATCH_FIRST,
  /** The batch's number: `FdMemo.batch` says whether a socket has a write in it. */
  number: 1,
  count: 0,
  send: undefined as DirectSend | undefined,
  bytes: undefined as Buffer | undefined,
  fds: new Int32Array(DIRECT_BATCH_MAX),
  results: new Int32Array(DIRECT_BATCH_MAX),
  sockets: new Array<Writable | undefined>(DIRECT_BATCH_MAX).fill(undefined),
};

/**
 * From here until the matching `closeDirectBatch`, `sendDirect` holds its writes of one Buffer and
 * sends them together: `DIRECT_BATCH_FIRST` at first, then twice as many each time up to
 * `DIRECT_BATCH_MAX`, and when the Buffer changes, when a socket is written a second time, at
 * `flushDirect`, and at the close. For a fan-out (one Buffer to many sockets, in one synchronous
 * loop): one call into the addon for many subscribers instead of one each, whose own cost (N-API's
 * argument reads and V8's callback) was 15% of the node's user-space instructions a delivery at
 * W1 (load-tests instructions.js). Pairs nest.
 *
 * A held write is not yet on its socket: whoever writes to a socket some other way while a batch
 * is open (through Node, a close, a control frame) calls `flushDirectFor` with its memo first, or
 * it would overtake what is held.
 */
export function openDirectBatch(): void {
  if (batch.depth === 0) batch.limit = DIRECT_BATCH_FIRST;
  batch.depth += 1;
}

/** Ends what `openDirectBatch` began; the outermost close sends what is held. */
export function closeDirectBatch(): void {
  batch.depth -= 1;
  if (batch.depth === 0) flushDirect();
}

/**
 * Sends the writes the open batch holds, in order; what the kernel did not take of one goes
 * through its socket's `write`, as `sendDirect` does.
 */
export function flushDirect(): void {
  const count = batch.count;
  if (count === 0) return;
  const { send, bytes, sockets, results } = batch;
  batch.count = 0;
  batch.number += 1;
  batch.limit = Math.min(DIRECT_BATCH_MAX, batch.limit * 2);
  batch.send = undefined;
  batch.bytes = undefined;
  const partial = send!.sendMany(batch.fds, count, bytes!, results);
  for (let i = 0; i < count; i++) {
    const socket = sockets[i]!;
    sockets[i] = undefined;
    if (partial !== 0) writeRest(socket, bytes!, partial < 0 ? 0 : results[i]!);
  }
}

/**
 * `flushDirect` when the open batch holds a write to the socket of `memo`: what a writer calls
 * before it writes to that socket some other way (through Node, a close, a control frame), so as
 * not to overtake it. A batch whose writes are all to other sockets goes on filling.
 */
export function flushDirectFor(memo: FdMemo): void {
  if (memo.batch === batch.number) flushDirect();
}

/** Writes through Node what the kernel did not take of `bytes` (`sent`: the bytes it took, or -errno). */
function writeRest(socket: Writable, bytes: Buffer, sent: number): void {
  if (sent === bytes.length) return;
  socket.write(sent > 0 ? bytes.subarray(sent) : bytes);
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
 * Within a batch (`openDirectBatch`) the write is held and sent with the batch's others.
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
  const batching = batch.depth > 0;
  // A socket written twice, or another Buffer: what is held goes first, before the socket's own
  // queue is read below (a held write the kernel did not take all of joins it).
  if (batching && batch.count > 0 && (memo.batch === batch.number || bytes !== batch.bytes || send !== batch.send)) {
    flushDirect();
  }
  if (socket.writableLength !== 0 || socket.writableCorked !== 0 || !socket.writable) return false;
  let fd = memo.fd;
  if (fd === undefined) {
    const handle = (socket as { _handle?: StreamHandle | null })._handle;
    if (handle == null) return false;
    fd = memo.fd = handle.fd;
  }
  if (!(fd >= 0)) return false;
  if (batching) {
    const at = batch.count++;
    batch.fds[at] = fd;
    batch.sockets[at] = socket;
    batch.bytes = bytes;
    batch.send = send;
    memo.batch = batch.number;
    if (batch.count === batch.limit) flushDirect();
    return true;
  }
  const sent = send.send(fd, bytes);
  if (sent !== undefined) writeRest(socket, bytes, sent);
  return true;
}
