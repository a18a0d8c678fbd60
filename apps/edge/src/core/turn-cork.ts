import type { Writable } from "node:stream";

/** Streams corked during this event-loop turn; uncorked together once the turn's I/O is handled. */
const corked: Writable[] = [];
let scheduled = false;

/**
 * Corks `stream` until the end of this event-loop turn, so every message written to it in the
 * turn leaves in one `writev` syscall. Within one poll phase Node handles many publishes (and a
 * Redis reply can carry many messages); without this each message to each subscriber was a
 * syscall of its own: `writev` was the largest self time (16%) in a CPU profile of W3 (64
 * publishers, embedded default). `setImmediate` runs right after the poll phase, so no message
 * waits for a timer.
 */
export function corkForTurn(stream: Writable): void {
  if (stream.writableCorked > 0) return;
  stream.cork();
  corked.push(stream);
  if (!scheduled) {
    scheduled = true;
    setImmediate(uncorkAll);
  }
}

function uncorkAll(): void {
  scheduled = false;
  for (let i = 0; i < corked.length; i++) {
    const stream = corked[i]!;
    while (stream.writableCorked > 0) stream.uncork();
  }
  corked.length = 0;
}
