import { Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { LeanHistogram } from "./lean-histogram.js";

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** `/metrics` text of one histogram each way, fed the same values. */
async function both(values: readonly number[]): Promise<[string, string]> {
  const theirs = new Registry();
  const ours = new Registry();
  const reference = new Histogram({ name: "h_seconds", help: "Some time.", buckets: BUCKETS, registers: [theirs] });
  const lean = new LeanHistogram({ name: "h_seconds", help: "Some time.", buckets: BUCKETS, registers: [ours] });
  for (const value of values) {
    reference.observe(value);
    lean.observe(value);
  }
  return [await ours.metrics(), await theirs.metrics()];
}

describe("LeanHistogram", () => {
  it("writes the same /metrics text as prom-client's Histogram, empty and after observations on, between and past the bounds", async () => {
    const [emptyOurs, emptyTheirs] = await both([]);
    expect(emptyOurs).toBe(emptyTheirs);
    const values = [0, 0.0005, 0.0004, 0.0006, 0.001, 0.003, 0.0999, 0.1, 0.1001, 0.75, 1, 1.5, 42, ...Array.from({ length: 200 }, (_, i) => i / 137)];
    const [ours, theirs] = await both(values);
    expect(ours).toContain('h_seconds_bucket{le="+Inf"} 213');
    expect(ours).toBe(theirs);
  });

  it("counts nothing for a value that is not a number, and starts over on reset", async () => {
    const registry = new Registry();
    const lean = new LeanHistogram({ name: "h_seconds", help: "Some time.", buckets: BUCKETS, registers: [registry] });
    lean.observe(Number.NaN);
    lean.observe(Number.POSITIVE_INFINITY);
    lean.observe(0.002);
    expect(await registry.metrics()).toContain("h_seconds_count 1\n");
    lean.reset();
    expect(await registry.metrics()).toContain("h_seconds_count 0\n");
  });
});
