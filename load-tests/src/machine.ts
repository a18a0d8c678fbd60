import { readFileSync } from "node:fs";

/** Jiffies of one CPU from `/proc/stat`: all of them, those spent idle (idle + iowait), and those stolen. */
interface CpuTimes {
  readonly total: number;
  readonly idle: number;
  /** Time the hypervisor ran something else while this virtual CPU had work (steal). */
  readonly steal: number;
}

function readCpus(): CpuTimes[] {
  const cpus: CpuTimes[] = [];
  for (const line of readFileSync("/proc/stat", "utf8").split("\n")) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (m === null) continue;
    const fields = m[2]!.trim().split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
    cpus[Number(m[1])] = { total, idle: fields[3]! + fields[4]!, steal: fields[7] ?? 0 };
  }
  return cpus;
}

/**
 * How busy each CPU of the machine was from now until `stop()`, in % (everything running there:
 * the processes measured, other sessions' tests, the kernel). Beside a run's own server and harness
 * CPU it says how much of a core something else took.
 */
export function sampleMachine(): { stop(): number[] } {
  return sampleCpus((spent) => Math.round((1 - spent.idle / spent.total) * 100));
}

/**
 * The share of each CPU's time, from now until `stop()`, in % (one decimal), that the machine's
 * hypervisor gave to something else while the CPU had work (`/proc/stat`'s steal). A virtual
 * machine's host that runs other guests on its cores takes it from whatever was running: on
 * 2026-12-06 a W3 run here lost 11% of CPU 0 and 18% of CPU 1 so, and the bare node did 11,000
 * publishes/s where the same machine kind had done 30,000-37,000 (docs/performance.md). A run with
 * steal measured the host as much as the server.
 */
export function sampleSteal(): { stop(): number[] } {
  return sampleCpus((spent) => Math.round((spent.steal / spent.total) * 1000) / 10);
}

/** Each CPU's `share` of its jiffies from now until `stop()` (0 for a CPU that spent none). */
function sampleCpus(share: (spent: CpuTimes) => number): { stop(): number[] } {
  const before = readCpus();
  return {
    stop() {
      return readCpus().map((after, i) => {
        const b = before[i];
        const total = after.total - (b?.total ?? 0);
        return total <= 0 ? 0 : share({ total, idle: after.idle - (b?.idle ?? 0), steal: after.steal - (b?.steal ?? 0) });
      });
    },
  };
}

/**
 * Milliseconds each of `pids` has spent ready to run but waiting for its CPU (the run queue) since
 * it started: `/proc/PID/schedstat`'s second field, of the process's main thread only (its helper
 * threads are not counted); 0 for a process that is gone. Over a run, the difference says how long
 * something else held the CPU the main thread wanted: another process of the machine, the server's
 * own helper threads or its Redis on the same core, or the kernel.
 */
export function runQueueWaitMs(pids: readonly number[]): number[] {
  return pids.map((pid) => {
    try {
      return Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[1]) / 1e6;
    } catch {
      return 0;
    }
  });
}
