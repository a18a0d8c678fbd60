import { execFile } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** infra/: up.sh and down.sh, and the shipped nginx, Prometheus and Grafana files they use. */
export const INFRA = fileURLToPath(new URL("../", import.meta.url));

/** Runs `command` with `env` over this process' environment; answers its exit code and its output. Never rejects. */
export function sh(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : Number(err.code ?? 1), out: stdout + stderr }),
    );
  });
}

/** Brings the topology up with local/up.sh and `env` (PLATE_LOCAL_DIR among it); throws its output and every log's last lines when it fails. */
export async function up(env: Record<string, string>): Promise<void> {
  const result = await sh("bash", [join(INFRA, "local/up.sh")], env);
  if (result.code !== 0) {
    const logs = await sh("bash", ["-c", `tail -n 5 ${env.PLATE_LOCAL_DIR}/logs/*.log`]);
    throw new Error(`infra/local/up.sh failed (${result.code}):\n${result.out}\n${logs.out}`);
  }
}

/** Stops what up.sh started with the same `env` (local/down.sh); nothing when it is stopped already. */
export async function down(env: Record<string, string>): Promise<void> {
  await sh("bash", [join(INFRA, "local/down.sh")], env);
}
