import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { cpus } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { runQueueWaitMs, sampleSteal } from "./machine.js";

const started: ChildProcess[] = [];

/** A busy loop pinned to CPU 1 at `nice`. */
function busyLoop(nice: number): ChildProcess {
  const child = spawn("nice", ["-n", String(nice), "taskset", "-c", "1", process.execPath, "-e", "for(;;){}"], { stdio: "ignore" });
  started.push(child);
  return child;
}

afterEach(() => {
  for (const child of started.splice(0)) child.kill("SIGKILL");
});

describe("runQueueWaitMs", () => {
  it("counts the time a process was ready to run while its CPU ran another, not the time it ran", async () => {
    // Two busy loops on one CPU: the scheduler gives the nice 0 one ~98% of it (weights 1024 and 15).
    // Whatever else runs there (the other test files' harness is pinned to CPU 1 too) makes both wait
    // more, the favoured one up to about half the time (more with two others): the difference stays.
    const favoured = busyLoop(0);
    const starved = busyLoop(19);
    // `nice` and `taskset` exec into node: the same pids.
    await sleep(300);
    const before = runQueueWaitMs([favoured.pid!, starved.pid!]);
    await sleep(1000);
    const [favouredMs, starvedMs] = runQueueWaitMs([favoured.pid!, starved.pid!]).map((ms, i) => ms - before[i]!);
    expect(starvedMs).toBeGreaterThan(500);
    expect(starvedMs! - favouredMs!).toBeGreaterThan(100);
  });

  it("answers 0 for a process that is not there", () => {
    // Above Linux's largest pid_max (2^22): never a process.
    expect(runQueueWaitMs([2 ** 22 + 1, process.pid]).map((ms) => ms >= 0)).toEqual([true, true]);
    expect(runQueueWaitMs([2 ** 22 + 1])).toEqual([0]);
  });
});

describe("sampleSteal", () => {
  it("answers, for each CPU of the machine, the % of its time the hypervisor took over the span", async () => {
    const steal = sampleSteal();
    await sleep(300);
    const shares = steal.stop();
    expect(shares).toHaveLength(cpus().length);
    for (const pct of shares) expect(Number.isFinite(pct) && pct >= 0 && pct <= 100).toBe(true);
  });
});
