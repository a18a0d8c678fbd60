// Nchan (the nginx pub/sub module) as the other side of the side-by-side benchmark: one nginx of our
// own per run, with its config, pid file, logs and temp paths in a work dir of its own, started as a
// child process and stopped by its pid. Needs nginx and libnginx-mod-nchan
// (`load-tests/nchan/install.sh`); what Nchan does on the wire is written down in
// `load-tests/nchan/README.md`.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * util-linux's setpriv, used for `--pdeathsig TERM`: the kernel SIGTERMs nginx's master (a fast
 * shutdown, which ends the worker) when this process dies by any means, SIGKILL included.
 */
const SETPRIV_BIN = "/usr/bin/setpriv";
/** Where nginx is looked for, in order; then `nginx` on PATH. */
const NGINX_BIN_CANDIDATES = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"];
/** The Nchan dynamic module's file name, as Debian's libnginx-mod-nchan ships it. */
const NCHAN_MODULE_FILE = "ngx_nchan_module.so";
/** Folders that may hold the module itself (Debian: /usr/lib/nginx/modules). */
const NCHAN_MODULE_DIRS = ["/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/local/nginx/modules"];
/** Folders of `load_module` snippets (Debian: 50-mod-nchan.conf -> modules-available/mod-nchan.conf). */
const NCHAN_MODULE_CONF_DIRS = ["/etc/nginx/modules-enabled", "/usr/share/nginx/modules-available"];
/** Prefixes a relative `load_module` path in those snippets is resolved against (Debian's --prefix first). */
const NGINX_PREFIXES = ["/usr/share/nginx", "/etc/nginx", "/usr/local/nginx"];

/** Connections one worker may hold; the machine's open-file limit stops at 20,000. */
const WORKER_CONNECTIONS = 20_000;
/** RLIMIT_NOFILE nginx sets for its worker. */
const WORKER_RLIMIT_NOFILE = 20_000;
/** Requests one keep-alive connection may carry: publishers reuse their connection for a whole run. */
const KEEPALIVE_REQUESTS = 1_000_000;
/** How long an idle keep-alive connection stays open, in seconds. */
const KEEPALIVE_TIMEOUT_S = 300;
/** Messages Nchan keeps per channel. */
const MESSAGE_BUFFER_LENGTH = 1000;
/** How long a buffered message lives, in seconds. */
const MESSAGE_TIMEOUT_S = 60;
/**
 * Nchan's shared memory (channels and buffered messages), in MiB. A publish that finds it full is
 * answered 500, so it is sized for the worst buffer a run can fill (1,000 channels x
 * MESSAGE_BUFFER_LENGTH messages of ~1 KiB, plus ~200 bytes each of Nchan's own); only pages used
 * count against memory (measured: the worker's RSS is 16 MB after start either way).
 */
const NCHAN_SHARED_MEMORY_MB = 2048;
/**
 * Request bodies up to this size stay in memory, in KiB; a larger one goes to a temp file, which Nchan
 * then stores as a file-backed message (slower): keep it above the benchmark's payload size.
 */
const CLIENT_BODY_BUFFER_KB = 64;
/** Largest message body accepted, in KiB (nginx's default is 1 MiB). */
const CLIENT_MAX_BODY_KB = 1024;
/** How long a graceful shutdown (SIGQUIT) may keep open subscriber connections, in seconds. */
const WORKER_SHUTDOWN_TIMEOUT_S = 2;

/** How long nginx may take to answer a probe publish after being spawned, in ms. */
const START_TIMEOUT_MS = 15_000;
/** How often a starting nginx is probed, in ms. */
const START_POLL_MS = 50;
/** How long one probe request may take, in ms. */
const PROBE_TIMEOUT_MS = 2_000;
/** How long `stop()` waits after SIGQUIT before SIGTERM, and after SIGTERM before SIGKILL, in ms. */
const STOP_STEP_MS = 5_000;
/** Channel the readiness probe publishes to (and deletes after). */
const PROBE_CHANNEL = "plate-nchan-probe";
/** Lines of nginx's error log quoted in a start failure. */
const ERROR_LOG_TAIL_LINES = 20;

/**
 * Channel ids the generated config routes: letters, digits, `_`, `-`, `.`, `:`. The subscriber
 * location's regex and this must agree. Ids are put into URLs verbatim: percent-encoding is not an
 * option, since nginx decodes the path (`/sub/a%3Ab` is channel `a:b`) but not `$arg_id`
 * (`/pub?id=a%3Ab` is channel `a%3Ab`).
 */
const CHANNEL_ID = /^[\w.:-]+$/;
/** The same set as an nginx regex for the subscriber location. */
const SUB_LOCATION_REGEX = "^/sub/([\\w.:-]+)$";
/** A Redis address nginx's config can carry unquoted: `redis://[user:pass@]host:port[/db]` or `host:port`. */
const REDIS_URL = /^(redis:\/\/)?[^\s;{}"'#$\\]+$/;

/** How to run one Nchan. */
export interface NchanOptions {
  /** Port on 127.0.0.1 to listen on. */
  port: number;
  /**
   * Redis to store and fan out through (Nchan's "distributed" mode), as `redis://host:port[/db]` or
   * `host:port`. Without it, Nchan keeps everything in its own shared memory.
   */
  redisUrl?: string;
  /** CPU to pin nginx's master and worker to (`taskset -c`); unpinned when absent. */
  cpu?: number;
  /**
   * Folder for nginx.conf, the pid file, the error log and the temp paths; created when missing and
   * left in place on stop. A fresh one under the OS temp folder when absent.
   */
  workDir?: string;
}

/** One running Nchan: one nginx master and its single worker, children of this process. */
export interface NchanServer {
  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  readonly url: string;
  /** The nginx master's pid (the worker is its child). */
  readonly pid: number;
  /** Folder holding nginx.conf, nginx.pid, error.log (warnings and worse) and the temp paths. */
  readonly workDir: string;
  /**
   * POST a message body here (any Content-Type); the body is delivered verbatim. Answers 201 when
   * the channel had subscribers, 202 when it had none, 500 when Nchan's shared memory is full.
   */
  publishUrl(channel: string): string;
  /**
   * GET with `Accept: text/event-stream`: a `: hi` comment first, then `id: <time>:<seq>` and one
   * `data:` line per line of the body for each message; no chunked encoding.
   */
  sseUrl(channel: string): string;
  /**
   * One frame per message, its payload the published body: text, or binary for a binary
   * Content-Type. A data frame sent by the subscriber is answered with close 1008.
   */
  wsUrl(channel: string): string;
  /**
   * Stops nginx (SIGQUIT, then SIGTERM, then SIGKILL of master and worker by pid, each after
   * STOP_STEP_MS) and resolves when the master has exited and the port is free. Idempotent.
   */
  stop(): Promise<void>;
}

/** What a config is generated from. */
export interface NchanConfigInput {
  port: number;
  workDir: string;
  modulePath: string;
  redisUrl?: string;
  /** Emit `user root;` so the worker can use the work dir (nginx would drop root to `nobody`). */
  runAsRoot: boolean;
}

/**
 * Starts nginx with Nchan on `127.0.0.1:<port>` and resolves once a publish to a throwaway channel
 * answers 2xx (in Redis mode that publish went through Redis). Rejects, with nginx's error log
 * quoted, if nginx exits or does not answer within START_TIMEOUT_MS (then it is killed).
 */
export async function startNchan(options: NchanOptions): Promise<NchanServer> {
  const { port, redisUrl, cpu } = options;
  if (!Number.isInteger(port) || port <= 0 || port > 65_535) throw new Error(`nchan: bad port ${port}`);
  if (cpu !== undefined && (!Number.isInteger(cpu) || cpu < 0)) throw new Error(`nchan: bad cpu ${cpu}`);
  if (redisUrl !== undefined && !REDIS_URL.test(redisUrl)) throw new Error(`nchan: bad redisUrl ${redisUrl}`);

  const nginx = findNginx();
  const modulePath = findNchanModule();
  const workDir =
    options.workDir === undefined ? await mkdtemp(join(tmpdir(), "plate-nchan-")) : resolve(options.workDir);
  await mkdir(workDir, { recursive: true });
  const confPath = join(workDir, "nginx.conf");
  const errorLog = join(workDir, "error.log");
  const runAsRoot = process.getuid?.() === 0;
  const config: NchanConfigInput = { port, workDir, modulePath, runAsRoot };
  if (redisUrl !== undefined) config.redisUrl = redisUrl;
  await writeFile(confPath, renderNchanConfig(config));

  // nginx's stdout/stderr go to a file, not a pipe: a pipe nobody drains would block nginx mid-run.
  const stdio = openSync(join(workDir, "stdio.log"), "a");
  const [file, ...args] = nginxCommand(nginx, ["-p", `${workDir}/`, "-c", confPath, "-e", errorLog], cpu);
  let child: ChildProcess;
  try {
    child = spawn(file, args, { stdio: ["ignore", stdio, stdio] });
  } finally {
    closeSync(stdio);
  }
  // A forgotten stop() must not keep the harness alive: nginx is killed when this process goes.
  child.unref();
  const exited = watchExit(child);
  const pid = child.pid;
  if (pid === undefined) {
    const exit = await exited;
    throw new Error(`nchan: could not spawn ${nginx}: ${exit.error?.message ?? "no pid"}`);
  }
  running.add(child);
  installExitHook();

  const url = `http://127.0.0.1:${port}`;
  const stop = stopOnce(child, pid, exited);
  const isGone = () => child.exitCode !== null || child.signalCode !== null;
  const outcome = await Promise.race([waitUntilAnswering(url, isGone), exited]);
  if (outcome !== true) {
    await stop();
    const why =
      outcome === false ? `did not answer within ${START_TIMEOUT_MS} ms` : `exited (${describeExit(outcome)})`;
    throw new Error(`nchan: nginx ${why}; ${workDir}/error.log:\n${await tail(errorLog)}`);
  }

  return {
    url,
    pid,
    workDir,
    publishUrl: (channel) => `${url}/pub?id=${checkChannel(channel)}`,
    sseUrl: (channel) => `${url}/sub/${checkChannel(channel)}`,
    wsUrl: (channel) => `ws://127.0.0.1:${port}/sub/${checkChannel(channel)}`,
    stop,
  };
}

/**
 * The nginx.conf for one Nchan, a pure function of its input. In Redis mode `nchan_redis_pass` sits
 * in both the publisher and the subscriber location: a location without it silently uses memory.
 */
export function renderNchanConfig(input: NchanConfigInput): string {
  const { port, workDir, modulePath, redisUrl, runAsRoot } = input;
  const path = (name: string) => join(workDir, name);
  const redisPass = redisUrl === undefined ? "" : "\n      nchan_redis_pass nchan_redis;";
  const upstream =
    redisUrl === undefined
      ? ""
      : `
  upstream nchan_redis {
    nchan_redis_server ${redisUrl};
  }
`;
  return `# Generated by load-tests/src/nchan.ts (startNchan); rewritten at every start.
load_module ${modulePath};
${runAsRoot ? "user root;\n" : ""}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile ${WORKER_RLIMIT_NOFILE};
worker_shutdown_timeout ${WORKER_SHUTDOWN_TIMEOUT_S}s;
pid ${path("nginx.pid")};
error_log ${path("error.log")} warn;

events {
  worker_connections ${WORKER_CONNECTIONS};
}

http {
  access_log off;
  default_type application/octet-stream;
  keepalive_requests ${KEEPALIVE_REQUESTS};
  keepalive_timeout ${KEEPALIVE_TIMEOUT_S}s;
  client_body_buffer_size ${CLIENT_BODY_BUFFER_KB}k;
  client_max_body_size ${CLIENT_MAX_BODY_KB}k;
  client_body_temp_path ${path("client_body")};
  proxy_temp_path ${path("proxy")};
  fastcgi_temp_path ${path("fastcgi")};
  uwsgi_temp_path ${path("uwsgi")};
  scgi_temp_path ${path("scgi")};
  nchan_shared_memory_size ${NCHAN_SHARED_MEMORY_MB}m;
${upstream}
  server {
    listen 127.0.0.1:${port};

    location = /pub {
      nchan_publisher http;
      nchan_channel_id $arg_id;
      nchan_message_buffer_length ${MESSAGE_BUFFER_LENGTH};
      nchan_message_timeout ${MESSAGE_TIMEOUT_S}s;${redisPass}
    }

    location ~ "${SUB_LOCATION_REGEX}" {
      nchan_subscriber websocket eventsource;
      nchan_channel_id $1;
      nchan_subscriber_first_message newest;${redisPass}
    }
  }
}
`;
}

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

/** Masters still running. */
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * The argv that runs nginx as the spawned process itself: setpriv and taskset each exec the next
 * program in place, so the child's pid is the master's and the worker inherits the CPU mask.
 */
function nginxCommand(nginx: string, nginxArgs: string[], cpu: number | undefined): [string, ...string[]] {
  const pinned: [string, ...string[]] =
    cpu === undefined ? [nginx, ...nginxArgs] : ["taskset", "-c", String(cpu), nginx, ...nginxArgs];
  return existsSync(SETPRIV_BIN) ? [SETPRIV_BIN, "--pdeathsig", "TERM", "--", ...pinned] : pinned;
}

/** Without setpriv, the fallback: SIGTERM every master still running when this process exits normally. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of running) child.kill("SIGTERM");
  });
}

function watchExit(child: ChildProcess): Promise<ExitInfo> {
  return new Promise((resolveExit) => {
    child.once("error", (error) => resolveExit({ code: null, signal: null, error }));
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolveExit({ code, signal });
    });
  });
}

function stopOnce(child: ChildProcess, pid: number, exited: Promise<ExitInfo>): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () => {
    stopping ??= shutdown(child, pid, exited);
    return stopping;
  };
}

/** SIGQUIT (graceful), then SIGTERM (fast), then SIGKILL of the worker(s) and the master. */
async function shutdown(child: ChildProcess, pid: number, exited: Promise<ExitInfo>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  for (const signal of ["SIGQUIT", "SIGTERM"] as const) {
    child.kill(signal);
    if (await exitsWithin(exited, STOP_STEP_MS)) return;
  }
  // A SIGKILLed master leaves its worker running (and holding the port): kill the worker by pid first.
  const workers = childPids(pid);
  child.kill("SIGKILL");
  for (const worker of workers) killQuietly(worker);
  // The child is unref'd: a pending timer keeps the event loop alive until its exit is seen.
  await exitsWithin(exited, STOP_STEP_MS);
}

async function exitsWithin(exited: Promise<ExitInfo>, ms: number): Promise<boolean> {
  const timer = new AbortController();
  const result = await Promise.race([
    exited.then(() => true),
    sleep(ms, false, { signal: timer.signal }).catch(() => false),
  ]);
  timer.abort();
  return result;
}

/** The pids whose parent is `pid`, from /proc (Linux). */
function childPids(pid: number): number[] {
  try {
    const pids: number[] = [];
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const listed = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim();
      if (listed !== "") pids.push(...listed.split(/\s+/).map(Number));
    }
    return pids;
  } catch {
    return [];
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

/** Resolves true once a probe publish answers 2xx, false after START_TIMEOUT_MS or once nginx is gone. */
async function waitUntilAnswering(url: string, isGone: () => boolean): Promise<boolean> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  const probe = `${url}/pub?id=${PROBE_CHANNEL}`;
  while (Date.now() < deadline && !isGone()) {
    const status = await httpStatus("POST", probe, "probe");
    if (status >= 200 && status < 300) {
      // Leave no probe channel behind (in Redis mode it would outlive this nginx).
      await httpStatus("DELETE", probe);
      return true;
    }
    await sleep(START_POLL_MS);
  }
  return false;
}

/** The status of one request on a connection of its own; 0 when it fails or times out. */
function httpStatus(method: string, url: string, body?: string): Promise<number> {
  return new Promise((resolveStatus) => {
    const req = request(url, { method, agent: false, timeout: PROBE_TIMEOUT_MS }, (res) => {
      res.resume();
      res.once("end", () => resolveStatus(res.statusCode ?? 0));
      res.once("error", () => resolveStatus(0));
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolveStatus(0));
    if (body !== undefined) req.setHeader("Content-Type", "text/plain");
    req.end(body);
  });
}

function checkChannel(channel: string): string {
  if (!CHANNEL_ID.test(channel)) throw new Error(`nchan: channel id ${JSON.stringify(channel)} is outside [\\w.:-]+`);
  return channel;
}

function findNginx(): string {
  return NGINX_BIN_CANDIDATES.find((bin) => existsSync(bin)) ?? "nginx";
}

/**
 * The absolute path of ngx_nchan_module.so: from a module folder, else from the `load_module` line
 * of an installed snippet (relative paths there are against nginx's prefix).
 */
function findNchanModule(): string {
  for (const dir of NCHAN_MODULE_DIRS) {
    const candidate = join(dir, NCHAN_MODULE_FILE);
    if (existsSync(candidate)) return candidate;
  }
  for (const dir of NCHAN_MODULE_CONF_DIRS) {
    let names: string[];
    try {
      names = readdirSync(dir).filter((name) => name.includes("nchan"));
    } catch {
      continue;
    }
    for (const name of names) {
      const match = /load_module\s+([^;\s]+)\s*;/.exec(readFileSync(join(dir, name), "utf8"));
      const declared = match?.[1];
      if (declared === undefined) continue;
      const candidates = isAbsolute(declared) ? [declared] : NGINX_PREFIXES.map((prefix) => join(prefix, declared));
      const found = candidates.find((candidate) => existsSync(candidate));
      if (found !== undefined) return found;
    }
  }
  throw new Error(`nchan: ${NCHAN_MODULE_FILE} not found; run load-tests/nchan/install.sh`);
}

function describeExit(exit: ExitInfo): string {
  if (exit.error !== undefined) return exit.error.message;
  return exit.signal === null ? `code ${exit.code}` : `signal ${exit.signal}`;
}

async function tail(file: string): Promise<string> {
  try {
    return (await readFile(file, "utf8")).trimEnd().split("\n").slice(-ERROR_LOG_TAIL_LINES).join("\n");
  } catch {
    return "(no error log)";
  }
}
