import { describe, expect, it } from "vitest";
import { churnChange } from "./presence-churn.js";

describe("churnChange", () => {
  const record = (c: number, k: number) => `{"state":{"c":${c},"k":${k}},"joinedAt":"2026-12-02T10:00:00.000Z"}`;
  const frame = (joins: string, leaves: string) => `{"type":"presence","channel":"bench.x.presence","joins":${joins},"leaves":${leaves}}`;

  it("reads a join as its state's change and a leave as the change after it", () => {
    expect(churnChange(frame(`{"n1.a":${record(3, 10)}}`, "{}"))).toEqual({ churner: 3, change: 10 });
    expect(churnChange(frame("{}", `{"n1.a":${record(3, 10)}}`))).toEqual({ churner: 3, change: 11 });
  });

  it("names no change for a steady member's diff", () => {
    expect(churnChange(frame(`{"n1.b":{"state":{"m":4},"joinedAt":"x"}}`, "{}"))).toBeUndefined();
  });
});
