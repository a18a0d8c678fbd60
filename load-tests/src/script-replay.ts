import { connect } from "node:net";
import type { Socket } from "node:net";
import { delta, readCounters } from "./redis-counters.js";

/*
 * One Redis saturated with Plate's publish script, to read what one master sustains at full CPU.
 * An edge cannot do it on this machine (the edges need several times Redis' CPU per publish), so
 * the harness replays the edge's own EVALSHA, captured with MONITOR as the edge sent it (its
 * script is in the server's cache then), as fast as the server answers.
 */

/** How long MONITOR may wait for the edge's EVALSHA, in ms. */
const CAPTURE_TIMEOUT_MS = 5000;
/** Connections replaying at once, and commands each writes per batch (like an edge's auto-pipeline). */
const REPLAY_CONNECTIONS = 4;
const REPLAY_BATCH = 32;

/**
 * The publish script's shape (packages/broker/src/redis-history.ts): `EVALSHA sha numkeys KEYS
 * ARGV`, with 6 keys and 25 arguments for the script, then per message its letters, their
 * arguments and its body (the first message's letters start with c: its channel, and its run's two
 * keys). What a replay needs of a captured one: its messages, the pub/sub command (ARGV[3]) and
 * the first message's Redis channel (ARGV[12], the plate's prefix, then its channel).
 */
export interface PublishScript {
  readonly messages: number;
  readonly pubsub: string;
  readonly channel: string;
}

/** The publish script's figures if `args` (an EVALSHA as sent) is one, else undefined. */
export function publishScript(args: readonly Buffer[]): PublishScript | undefined {
  const keys = Number(args[2]?.toString());
  if (!Number.isInteger(keys) || keys < 8 || args.length < 3 + keys + 25 + 3) return undefined;
  const argv = (i: number) => args[3 + keys + i - 1]!.toString();
  const messages = Number(argv(11));
  if (!Number.isInteger(messages) || messages < 1 || !argv(26).startsWith("c")) return undefined;
  return { messages, pubsub: argv(3), channel: argv(12) + argv(27) };
}

/**
 * The arguments of the first EVALSHA that `accept` takes (by default any) a client (not a script)
 * sends to the Redis on `port` while `trigger` runs, read from MONITOR: each as the bytes sent. An
 * edge sends other scripts too (its connection reports, each second).
 */
export async function captureEvalsha(
  port: number,
  trigger: () => Promise<void>,
  accept: (args: readonly Buffer[]) => boolean = () => true,
): Promise<Buffer[]> {
  const socket = connect({ host: "127.0.0.1", port });
  socket.setEncoding("latin1");
  try {
    let text = "";
    const found = new Promise<Buffer[]>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no EVALSHA seen on port ${port} within ${CAPTURE_TIMEOUT_MS} ms`)),
        CAPTURE_TIMEOUT_MS,
      );
      socket.on("data", (chunk: string) => {
        text += chunk;
        let end: number;
        while ((end = text.indexOf("\r\n")) !== -1) {
          const line = text.slice(0, end);
          text = text.slice(end + 2);
          // `+<time> [<db> <client address>] "evalsha" "<sha>" ...`; a script's own calls say `[<db> lua]`.
          const at = line.indexOf('] "evalsha" ');
          if (at === -1 || line.includes(" lua]")) continue;
          const args = monitorArgs(line.slice(at + 2));
          if (!accept(args)) continue;
          clearTimeout(timer);
          resolve(args);
          return;
        }
      });
      socket.once("error", reject);
    });
    found.catch(() => undefined);
    socket.write("MONITOR\r\n");
    await new Promise((r) => setTimeout(r, 100));
    await trigger();
    return await found;
  } finally {
    socket.destroy();
  }
}

/** MONITOR's one-letter escapes. */
const ESCAPES: Readonly<Record<string, number>> = { n: 10, r: 13, t: 9, a: 7, b: 8 };

/** The quoted arguments of a MONITOR line, unescaped as Redis escapes them (`sdscatrepr`). */
function monitorArgs(quoted: string): Buffer[] {
  const args: Buffer[] = [];
  for (const [, body] of quoted.matchAll(/"((?:[^"\\]|\\.)*)"/g)) {
    const bytes: number[] = [];
    for (let i = 0; i < body!.length; i++) {
      const ch = body!.charCodeAt(i);
      if (ch !== 0x5c) {
        bytes.push(ch);
        continue;
      }
      const next = body![++i]!;
      if (next === "x") {
        bytes.push(parseInt(body!.slice(i + 1, i + 3), 16));
        i += 2;
      } else {
        bytes.push(ESCAPES[next] ?? next.charCodeAt(0));
      }
    }
    args.push(Buffer.from(bytes));
  }
  return args;
}

/** What one Redis did when saturated by replays. */
export interface Saturation {
  /** Messages the replayed scripts published (scripts × the captured script's messages). */
  readonly calls: number;
  readonly seconds: number;
  readonly callsPerS: number;
  /** The server's CPU meanwhile, % of one core. */
  readonly cpuPct: number;
  /** Per message published, as `evalshaUsPerCall`. */
  readonly cpuUsPerCall: number;
  readonly evalshaUsPerCall: number;
}

/**
 * Replays `args` (one publish script of `messages` messages) on the Redis on `port` for
 * `durationMs`, as fast as it answers. Calls are counted in published messages.
 */
export async function saturate(port: number, args: readonly Buffer[], durationMs: number, messages: number): Promise<Saturation> {
  const command = Buffer.concat([
    Buffer.from(`*${args.length}\r\n`),
    ...args.flatMap((arg) => [Buffer.from(`$${arg.length}\r\n`), arg, Buffer.from("\r\n")]),
  ]);
  const batch = Buffer.concat(Array.from({ length: REPLAY_BATCH }, () => command));
  const sockets = Array.from({ length: REPLAY_CONNECTIONS }, () => connect({ host: "127.0.0.1", port }));
  try {
    const before = await readCounters(port);
    const started = performance.now();
    const end = started + durationMs;
    await Promise.all(sockets.map((socket) => replay(socket, batch, end, 1 + 4 * messages)));
    const seconds = (performance.now() - started) / 1000;
    const d = delta(before, await readCounters(port));
    const calls = d.calls("evalsha") * messages;
    return {
      calls,
      seconds,
      callsPerS: Math.round(calls / seconds),
      cpuPct: Math.round((d.cpuUs / 1e6 / seconds) * 100),
      cpuUsPerCall: d.cpuUs / calls,
      evalshaUsPerCall: d.usecPerCall("evalsha") / messages,
    };
  } finally {
    for (const socket of sockets) socket.destroy();
  }
}

/**
 * Writes `batch` (`REPLAY_BATCH` commands) and waits for as many replies, until `end`. Each reply
 * of the publish script is `linesPerReply` lines (`*<messages>`, then per message `*2`, `:0`,
 * `$<length>`, the id); an error reply rejects.
 */
function replay(socket: Socket, batch: Buffer, end: number, linesPerReply: number): Promise<void> {
  const linesPerBatch = linesPerReply * REPLAY_BATCH;
  return new Promise((resolve, reject) => {
    let lines = 0;
    let lineStart = true;
    socket.on("data", (chunk: Buffer) => {
      if ((lineStart && chunk[0] === 0x2d) || chunk.includes("\n-"))
        return reject(new Error(`Redis refused a replay: ${chunk.toString("latin1", 0, 200)}`));
      for (let at = chunk.indexOf(10); at !== -1; at = chunk.indexOf(10, at + 1)) lines += 1;
      lineStart = chunk[chunk.length - 1] === 10;
      if (lines < linesPerBatch) return;
      lines -= linesPerBatch;
      if (performance.now() < end) socket.write(batch);
      else resolve();
    });
    socket.once("error", reject);
    socket.write(batch);
  });
}
