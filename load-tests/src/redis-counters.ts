import { execFileSync } from "node:child_process";
import { redisCommand } from "@plate/testing";

/** Calls and time of one command, from `INFO commandstats`. */
export interface CommandStat {
  readonly calls: number;
  /** Time spent in it, in µs (a script's time includes the commands it calls). */
  readonly usec: number;
}

/** What one redis-server has done so far, read from its own counters. */
export interface RedisCounters {
  /** Per command, lowercase (`evalsha`, `publish`, `spublish`); commands a script calls count too. */
  readonly commands: ReadonlyMap<string, CommandStat>;
  /** `used_cpu_user + used_cpu_sys` of the whole process, in seconds. */
  readonly cpuSeconds: number;
}

/** The counters of the Redis on `port` now (`INFO commandstats`, `INFO cpu`). */
export async function readCounters(port: number): Promise<RedisCounters> {
  const stats = await redisCommand(port, ["INFO", "commandstats"]);
  const cpu = await redisCommand(port, ["INFO", "cpu"]);
  const commands = new Map<string, CommandStat>();
  for (const [, name, calls, usec] of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    commands.set(name!, { calls: Number(calls), usec: Number(usec) });
  }
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? Number.NaN);
  return { commands, cpuSeconds: field("used_cpu_user") + field("used_cpu_sys") };
}

/** What a Redis did between two readings. */
export interface CountersDelta {
  /** Calls of `command` in between. */
  calls(command: string): number;
  /** µs per call of `command` in between (0 when it was not called). */
  usecPerCall(command: string): number;
  /** CPU the process used in between, in µs. */
  readonly cpuUs: number;
  /** Calls of every command called in between. */
  readonly allCalls: Readonly<Record<string, number>>;
}

export function delta(before: RedisCounters, after: RedisCounters): CountersDelta {
  const of = (command: string) => {
    const a = after.commands.get(command);
    const b = before.commands.get(command);
    return { calls: (a?.calls ?? 0) - (b?.calls ?? 0), usec: (a?.usec ?? 0) - (b?.usec ?? 0) };
  };
  return {
    calls: (command) => of(command).calls,
    usecPerCall: (command) => {
      const d = of(command);
      return d.calls === 0 ? 0 : d.usec / d.calls;
    },
    cpuUs: (after.cpuSeconds - before.cpuSeconds) * 1e6,
    allCalls: Object.fromEntries(
      [...after.commands.keys()]
        .map((command): [string, number] => [command, of(command).calls])
        .filter(([, calls]) => calls !== 0),
    ),
  };
}

/** The process id of the redis-server on `port` (`INFO server`). */
export async function redisPid(port: number): Promise<number> {
  const info = await redisCommand(port, ["INFO", "server"]);
  const pid = Number(/^process_id:(\d+)/m.exec(info)?.[1]);
  if (!Number.isInteger(pid)) throw new Error(`no process_id in INFO server of port ${port}`);
  return pid;
}

/**
 * Pins the redis-server on `port`, every thread of it, to `cpu` (`taskset -a -p`): for servers
 * started without a `cpu` option, such as a cluster's nodes.
 */
export async function pinRedis(port: number, cpu: number): Promise<void> {
  execFileSync("taskset", ["-a", "-p", "-c", String(cpu), String(await redisPid(port))], { stdio: "ignore" });
}
