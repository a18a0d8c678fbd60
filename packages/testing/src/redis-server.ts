import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** How long a spawned redis-server may take to accept connections, in ms. */
const REDIS_START_TIMEOUT_MS = 10_000;
/** How often a starting redis-server is polled, in ms. */
const REDIS_POLL_MS = 20;

/**
 * A real Redis for a test. Spawned on a free port of 127.0.0.1 with persistence off, unless
 * `REDIS_URL` names one to use instead (`external`: it cannot be killed or restarted then, so the
 * fault tests that need that skip, saying why).
 */
export interface RedisServer {
  readonly url: string;
  readonly port: number;
  readonly external: boolean;
  /** SIGKILLs the server (as a crash would) and waits for it to be gone. */
  kill(): Promise<void>;
  /**
   * Starts it again on the same port and waits until it accepts connections: empty, or with what it
   * held when it was started `persistent`.
   */
  restart(): Promise<void>;
  /** Stops it for good (does nothing for an external one). */
  stop(): Promise<void>;
}

/** A TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * `count` distinct TCP ports nothing listens on right now. Each is held until all are found: two
 * `freePort` calls in a row may answer the same port.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
      });
    }
    return servers.map((server) => {
      const address = server.address();
      return typeof address === "object" && address !== null ? address.port : 0;
    });
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

/** How a Redis is started. */
export interface RedisOptions {
  /** An append-only file fsynced at every write, in a temporary folder: data outlives `kill` and `restart`. */
  readonly persistent?: boolean;
  /** Pin the server to this CPU (`taskset -c`), as benchmarks do. */
  readonly cpu?: number;
  /** Use `REDIS_URL` when it is set (tests do; a benchmark wants a server of its own). Default true. */
  readonly fromEnv?: boolean;
  /** More `redis-server` arguments, e.g. `["--repl-diskless-sync-delay", "0"]`. */
  readonly args?: readonly string[];
}

/** Starts a redis-server of its own on a free port (or uses `REDIS_URL`, see `RedisOptions`). */
export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  const given = process.env.REDIS_URL;
  if (options.fromEnv !== false && given !== undefined && given !== "") return externalRedis(given);
  return startRedisAt(await freePort(), options);
}

/** How `startRedisAt` spawns a server: as `RedisOptions` say, after a config file when one is given. */
export interface SpawnOptions extends Omit<RedisOptions, "fromEnv"> {
  /** Read before the arguments, which override it; Sentinel needs one, and rewrites it. */
  readonly configFile?: string;
  /** The folder the server works in, which `stop` removes; by default a new temporary one. */
  readonly dir?: string;
}

/** Starts a redis-server of its own on `port` (never `REDIS_URL`): the base of every deployment here. */
export async function startRedisAt(port: number, options: SpawnOptions = {}): Promise<RedisServer> {
  // A folder of its own even without persistence: a replica's full sync writes an RDB file there.
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "plate-redis-"));
  const spawnRedis = () => spawnRedisAt(port, dir, options);
  let child: ChildProcess | undefined;
  try {
    child = await spawnRedis();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const url = `redis://127.0.0.1:${port}`;
  return {
    url,
    port,
    external: false,
    async kill() {
      const running = child;
      child = undefined;
      if (running !== undefined) await killChild(running);
    },
    async restart() {
      if (child !== undefined) await killChild(child);
      child = await spawnRedis();
    },
    async stop() {
      const running = child;
      child = undefined;
      if (running !== undefined) await killChild(running);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Awaits servers started together: if one fails, stops those that started and rejects as it did. */
export async function startAll(starting: readonly Promise<RedisServer>[]): Promise<RedisServer[]> {
  const results = await Promise.allSettled(starting);
  const servers = results.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
  const failed = results.find((result) => result.status === "rejected");
  if (failed === undefined) return servers;
  await Promise.all(servers.map((server) => server.stop()));
  throw failed.reason;
}

function externalRedis(url: string): RedisServer {
  const refuse = () => Promise.reject(new Error("REDIS_URL is set: the test cannot kill or restart that server"));
  return { url, port: Number(new URL(url).port || 6379), external: true, kill: refuse, restart: refuse, stop: () => Promise.resolve() };
}

async function spawnRedisAt(port: number, dir: string, options: SpawnOptions): Promise<ChildProcess> {
  const { cpu } = options;
  const persistence =
    options.persistent === true ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"];
  const args = [
    ...(options.configFile === undefined ? [] : [options.configFile]),
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--save",
    "",
    ...persistence,
    "--protected-mode",
    "no",
    "--loglevel",
    "warning",
    ...(options.args ?? []),
  ];
  // taskset execs redis-server in place: the child is the server itself.
  const child =
    cpu === undefined
      ? spawn("redis-server", args, { stdio: "ignore" })
      : spawn("taskset", ["-c", String(cpu), "redis-server", ...args], { stdio: "ignore" });
  const failed = new Promise<never>((_, reject) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      reject(
        err.code === "ENOENT"
          ? new Error(
              "redis-server is not on PATH. Install it (Debian: `apt-get install -y redis-server`; .ci/run does this) or set REDIS_URL to a Redis to use.",
            )
          : err,
      );
    });
    child.once("exit", (code) => reject(new Error(`redis-server on port ${port} exited with ${code} before it was ready`)));
  });
  const ready = (async () => {
    const deadline = Date.now() + REDIS_START_TIMEOUT_MS;
    while (!(await answersPing(port))) {
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start within ${REDIS_START_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, REDIS_POLL_MS));
    }
  })();
  try {
    await Promise.race([ready, failed]);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  failed.catch(() => undefined);
  return child;
}

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: "127.0.0.1" });
    let seen = "";
    socket.setEncoding("utf8");
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk: string) => {
      seen += chunk;
      if (seen.includes("\r\n")) {
        socket.destroy();
        resolve(seen.startsWith("+PONG"));
      }
    });
    socket.once("error", () => resolve(false));
  });
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGKILL");
  await gone;
}
