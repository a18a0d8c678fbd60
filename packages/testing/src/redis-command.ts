import { createConnection } from "node:net";

/** How long one command sent by `redisCommand` or `redisReply` may take, in ms. */
const COMMAND_TIMEOUT_MS = 5000;

/**
 * A RESP2 reply as `redisReply` answers it: a simple or bulk string (UTF-8), an integer as its
 * digits, a nil as `null`, an array of replies.
 */
export type RedisReply = string | null | readonly RedisReply[];

/**
 * Sends one command on a connection of its own and answers its reply as text (a simple string,
 * an integer or a bulk string; a nil is `""`); an error reply rejects, and so does an array.
 */
export async function redisCommand(port: number, args: readonly string[]): Promise<string> {
  const reply = await redisReply(port, args);
  if (typeof reply === "string") return reply;
  if (reply === null) return "";
  throw new Error(`unexpected array reply to ${args[0]} from port ${port}`);
}

/**
 * Sends one command on a connection of its own and answers its whole reply, arrays included
 * (`CLUSTER GETKEYSINSLOT`, `SENTINEL replicas`); an error reply rejects, even inside an array.
 */
export function redisReply(port: number, args: readonly string[]): Promise<RedisReply> {
  const request = `*${args.length}\r\n` + args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join("");
  return new Promise((resolve, reject) => {
    const socket = createConnection({ port, host: "127.0.0.1" });
    let seen = Buffer.alloc(0);
    const done = (err: Error | undefined, reply?: RedisReply) => {
      clearTimeout(timer);
      socket.destroy();
      if (err === undefined) resolve(reply ?? null);
      else reject(err);
    };
    const timer = setTimeout(() => done(new Error(`no answer to ${args[0]} from port ${port}`)), COMMAND_TIMEOUT_MS);
    socket.once("connect", () => socket.write(request));
    socket.on("data", (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      let parsed: Parsed | undefined;
      try {
        parsed = parseReply(seen, 0);
      } catch (err) {
        return done(err as Error);
      }
      if (parsed === undefined) return;
      if (parsed.reply instanceof Error) return done(parsed.reply);
      return done(undefined, parsed.reply);
    });
    socket.once("error", (err) => done(err));
  });
}

/** A reply read from a buffer, and where the next one starts. */
interface Parsed {
  readonly reply: RedisReply | Error;
  readonly end: number;
}

/** Reads the reply at `start` of `buffer`; `undefined` while it is incomplete. */
function parseReply(buffer: Buffer, start: number): Parsed | undefined {
  const lineEnd = buffer.indexOf("\r\n", start);
  if (lineEnd === -1) return undefined;
  const line = buffer.toString("utf8", start + 1, lineEnd);
  const next = lineEnd + 2;
  switch (String.fromCharCode(buffer[start]!)) {
    case "+":
    case ":":
      return { reply: line, end: next };
    case "-":
      return { reply: new Error(line), end: next };
    case "$": {
      const length = Number(line);
      if (length < 0) return { reply: null, end: next };
      if (buffer.length < next + length + 2) return undefined;
      return { reply: buffer.toString("utf8", next, next + length), end: next + length + 2 };
    }
    case "*": {
      const count = Number(line);
      if (count < 0) return { reply: null, end: next };
      const replies: RedisReply[] = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buffer, at);
        if (item === undefined) return undefined;
        // An error inside an array (an `EXEC`'s) fails the whole command: no caller here wants it as a value.
        if (item.reply instanceof Error) return item;
        replies.push(item.reply);
        at = item.end;
      }
      return { reply: replies, end: at };
    }
    default:
      throw new Error(`unexpected reply: ${buffer.toString("utf8")}`);
  }
}
