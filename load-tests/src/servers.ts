import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "@plate/testing";

/** The edge node users run (`npm run build` first). */
const EDGE_MAIN = fileURLToPath(new URL("../../apps/edge/dist/main.js", import.meta.url));

/**
 * What every command that starts a node gives Node (the root and apps/edge `npm start`, the
 * Dockerfile, infra/local/up.sh): V8's young generation at most 4 MB a semi-space (README,
 * "Operating"). On the command line, so `NODE_OPTIONS` does not override it: try another size with
 * `nodeArgs`, given after it (bench.js `--plate-node-args=--max-semi-space-size=8`).
 */
export const EDGE_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=4"];
/** W3's bare Node reference (bare-node.ts), built next to this file. */
const BARE_NODE_MAIN = fileURLToPath(new URL("./bare-node.js", import.meta.url));
/** How long a server may take to start, in ms. */
const START_TIMEOUT_MS = 15_000;

/** A server process the benchmark started, pinned to a CPU. */
export interface Started {
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

/** The command line, pinned to `cpu` with taskset when given. */
function pinned(cpu: number | undefined, command: string, args: string[]): [string, string[]] {
  return cpu === undefined ? [command, args] : ["taskset", ["-c", String(cpu), command, ...args]];
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), START_TIMEOUT_MS);
  await gone;
  clearTimeout(timer);
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = START_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not start within ${timeoutMs} ms`);
}

/** Plate's benchmark settings: no limits that a benchmark would hit, protocol pings off. */
export interface PlateBenchOptions {
  readonly cpu: number | undefined;
  readonly redisUrl: string | undefined;
  readonly plate: string;
  readonly key: string;
  /** Extra environment. */
  readonly env?: Record<string, string>;
  /** Extra arguments of `node` before the script, e.g. `--cpu-prof` (not allowed in NODE_OPTIONS). */
  readonly nodeArgs?: readonly string[];
  /** A command that runs `node` (e.g. valgrind and its options), instead of pinning it to `cpu`. */
  readonly launcher?: readonly string[];
  /** How long it may take to answer /readyz, in ms (default `START_TIMEOUT_MS`). */
  readonly startTimeoutMs?: number;
  /** A file the node's standard output (its JSON log) is appended to; by default it goes nowhere. */
  readonly logFile?: string;
}

/** Starts W3's bare Node reference (bare-node.ts) pinned to `cpu`; `nodeArgs` as for Plate. */
export async function startBareNode(cpu: number | undefined, nodeArgs: readonly string[] = []): Promise<Started> {
  const port = await freePort();
  const [command, args] = pinned(cpu, process.execPath, [...nodeArgs, BARE_NODE_MAIN]);
  const child = spawn(command, args, { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, PORT: String(port) } });
  // It answers anything: a GET without a body is its 400.
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/`)).status === 400, "bare node");
  return { port, pid: child.pid!, stop: () => stopChild(child) };
}

/** Starts `node apps/edge/dist/main.js` as users run it, with benchmark settings. */
export async function startPlate(options: PlateBenchOptions): Promise<Started> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "plate-bench-"));
  const node = [...EDGE_NODE_FLAGS, ...(options.nodeArgs ?? []), EDGE_MAIN];
  const [command, args] = options.launcher === undefined ? pinned(options.cpu, process.execPath, node) : [options.launcher[0]!, [...options.launcher.slice(1), process.execPath, ...node]];
  const log = options.logFile === undefined ? "ignore" : openSync(options.logFile, "a");
  const child = spawn(command, args, {
    stdio: ["ignore", log, "inherit"],
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      DEMO_PLATE: "false",
      LOG_LEVEL: "warn",
      BOOTSTRAP_PLATES: JSON.stringify({ [options.plate]: options.key }),
      // The harness does not answer pings; neither server pings during a benchmark.
      HEARTBEAT_MS: "300000",
      PUBLISH_RATE_PER_S: "0",
      // W5's clients publish over route 9 as fast as answers come.
      CLIENT_PUBLISH_RATE_PER_S: "0",
      CLIENT_PUBLISH_PLATE_RATE_PER_S: "0",
      MAX_CONNECTIONS_PER_PLATE: "0",
      // Thousands of subscribers connect at once from 16 loopback addresses.
      MAX_PENDING_CONNECTIONS: "0",
      MAX_PENDING_CONNECTIONS_PER_ADDRESS: "0",
      ...(options.redisUrl === undefined ? {} : { REDIS_URL: options.redisUrl }),
      ...options.env,
    },
  });
  // The child holds its own copy of the descriptor.
  if (typeof log === "number") closeSync(log);
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, "plate", options.startTimeoutMs);
  return {
    port,
    pid: child.pid!,
    stop: async () => {
      await stopChild(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
