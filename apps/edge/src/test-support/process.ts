import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { SETTINGS } from "../config.js";
import { ADMIN_TOKEN, KEYS, eventually } from "./node.js";

/** The built entry point users run (`npm start`); the dist is built before the tests run. */
const MAIN = fileURLToPath(new URL("../../dist/main.js", import.meta.url));

/** `node dist/main.js` as a user runs it, with its output and exit recorded. */
export class EdgeProcess {
  stdout = "";
  stderr = "";
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  exitedAt: number | undefined;
  readonly child: ChildProcess;
  readonly url: string;

  constructor(
    readonly port: number,
    env: Record<string, string>,
  ) {
    // The process gets no Plate setting from the test runner's environment: only those given here.
    const base: Record<string, string | undefined> = { ...process.env };
    for (const variable of Object.keys(SETTINGS)) delete base[variable];
    this.url = `http://127.0.0.1:${port}`;
    this.child = spawn(process.execPath, [MAIN], {
      env: { ...base, PORT: String(port), HOST: "127.0.0.1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (this.stdout += chunk));
    this.child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (this.stderr += chunk));
    this.child.on("exit", (code, signal) => {
      this.exit = { code, signal };
      this.exitedAt = Date.now();
    });
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  /** Waits until `/healthz` answers 200; throws with the output if the process exits or takes too long. */
  async ready(timeoutMs = 10_000): Promise<void> {
    const up = await eventually(async () => {
      if (!this.alive) return true;
      try {
        return (await fetch(`${this.url}/healthz`)).status === 200;
      } catch {
        return false;
      }
    }, timeoutMs);
    if (!up || !this.alive)
      throw new Error(`the node did not start (exit ${JSON.stringify(this.exit)}): ${this.stderr}${this.stdout}`);
  }

  /** Waits for the process to exit; answers its exit code (undefined if still running). */
  async exited(timeoutMs: number): Promise<number | null | undefined> {
    await eventually(() => !this.alive, timeoutMs);
    return this.exit?.code;
  }

  /** Kills the process if it is still running. */
  kill(): void {
    if (this.alive && this.child.pid !== undefined) process.kill(this.child.pid, "SIGKILL");
  }
}

/** The settings of a test node on a shared Redis: the test plates, quiet logs, quick reconnects. */
export function redisNodeEnv(redisUrl: string): Record<string, string> {
  return {
    REDIS_URL: redisUrl,
    ADMIN_TOKEN,
    BOOTSTRAP_PLATES: JSON.stringify(KEYS),
    LOG_LEVEL: "error",
    REDIS_RECONNECT_MAX_MS: "200",
  };
}
