import type { Writable } from "node:stream";

/** Streams corked during this event-loop turn; uncorked together once the turn's I/O is handled. */
const corked: Writable[] = [];
let scheduled = false;
/** The current turn's number (see `corkForTurn`): advanced at the end of every turn that wrote. */
let turn = 1;

/**
 * Readies `stream` for a write in this event-loop turn. A stream written once a turn (fan-out: a
 * message to each of 1,000 subscribers) is written through; one written more than once in a turn
 * is corked at its second write, and from its first in the next turn, until each turn ends, so a
 * burst leaves in one `writev` syscall. `state` is what this function answered for the stream's
 * previous write (0 for none): the turn of that write, negative when that turn was a burst. The
 * caller keeps the answer for the next.
 *
 * Within one poll phase Node handles many publishes (and a Redis reply can carry many messages):
 * without corking each message to each subscriber was a syscall of its own (`writev` was the
 * largest self time, 16%, in a CPU profile of W3: 64 publishers, embedded default). Corking every
 * stream at its first write cost the common fan-out a cork, an uncork and Node's buffered-write
 * path per delivery: 8-10% of the node's instructions per delivery at W1 (user space; the
 * kernel's share of a delivery is the larger). `setImmediate` runs right after the poll phase, so
 * no message waits for a timer.
 */
export function corkForTurn(stream: Writable, state: number): number {
  const last = state < 0 ? -state : state;
  const again = last === turn;
  // A second write this turn, or the first after a turn with a burst: the burst goes on.
  if ((again || (state < 0 && last === turn - 1)) && stream.writableCorked === 0) {
    stream.cork();
    corked.push(stream);
  }
  if (!scheduled) {
    scheduled = true;
    setImmediate(endTurn);
  }
  return again ? -turn : turn;
}

function endTurn(): void {
  scheduled = false;
  turn += 1;
  for (let i = 0; i < corked.length; i++) {
    const stream = corked[i]!;
    while (stream.writableCorked > 0) stream.uncork();
  }
  corked.length = 0;
}
