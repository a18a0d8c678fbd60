/**
 * W1 fan-out: one channel, SUBSCRIBERS subscribers (default 1,000) over TRANSPORT (ws, or sse with
 * xk6-sse), one publisher at RATE_PER_S (default 100 msg/s, so 100,000 deliveries/s).
 * MODE=ramp starts at that rate and multiplies it by 1.25 every 3 s.
 *
 * Measures: plate_delivery_latency (publish → receipt, ms), plate_delivered (expected: SUBSCRIBERS ×
 * successful publishes), plate_errors. Passes while p99 latency ≤ 100 ms and nothing failed.
 */
import exec from "k6/execution";
import type { Options } from "k6/options";
import {
  DELIVERY_THRESHOLDS,
  SUMMARY_TREND_STATS,
  closeAtMs,
  envInt,
  publish,
  publishSeconds,
  publisherScenario,
  runPlan,
  subscriberScenario,
  takeConnectTurn,
} from "./common.ts";
import { holdSubscription } from "./subscribe.ts";

/** Subscribers of the one channel. Env SUBSCRIBERS. */
const SUBSCRIBERS = envInt("SUBSCRIBERS", 1000);
/** Publish rate (fixed mode), or starting rate (ramp mode), in msg/s. Env RATE_PER_S. */
const RATE_PER_S = envInt("RATE_PER_S", 100);
const CHANNEL = "w1-fanout";

const plan = runPlan(SUBSCRIBERS, publishSeconds());

export const options: Options = {
  discardResponseBodies: true,
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    subscribers: subscriberScenario(SUBSCRIBERS, plan),
    publisher: publisherScenario(RATE_PER_S, plan),
  },
  thresholds: DELIVERY_THRESHOLDS,
};

/** One subscriber VU: waits for its connect turn, then holds its subscription until the plan ends. */
export function subscriber(): void {
  takeConnectTurn();
  holdSubscription(CHANNEL, closeAtMs(plan));
}

/** One publish per iteration; the iteration number is the message's sequence number. */
export function publisher(): void {
  publish(CHANNEL, exec.scenario.iterationInTest);
}
