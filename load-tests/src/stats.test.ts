import { describe, expect, it } from "vitest";
import { NO_USER } from "./payload.js";
import { RunStats, WARMUP_PUBLISHER } from "./stats.js";

describe("DeliveryTracker of a filtered subscriber", () => {
  it("counts the messages of its own user and flags any other as wrong, never as delivered", () => {
    const stats = new RunStats();
    const step = stats.begin(100, 0);
    const mine = stats.tracker(false, 7);
    mine.record(0, 1, 5, 6, 7);
    mine.record(1, 1, 5, 6, 8);
    mine.record(2, 1, 5, 6, NO_USER);
    expect(step.delivered).toBe(1);
    expect(mine.received).toBe(1);
    expect(stats.wrong).toBe(2);
  });

  it("is warmed only by a warm-up message of its own user", () => {
    const stats = new RunStats();
    const mine = stats.tracker(false, 3);
    mine.record(0, WARMUP_PUBLISHER, 0, 1, 4);
    expect(mine.warmed).toBe(false);
    expect(stats.wrong).toBe(1);
    mine.record(1, WARMUP_PUBLISHER, 0, 1, 3);
    expect(mine.warmed).toBe(true);
  });

  it("leaves a subscriber without a filter counting every message", () => {
    const stats = new RunStats();
    const step = stats.begin(100, 0);
    const any = stats.tracker(false);
    any.record(0, 1, 5, 6, 8);
    any.record(1, 1, 5, 6, NO_USER);
    expect(step.delivered).toBe(2);
    expect(stats.wrong).toBe(0);
  });
});
