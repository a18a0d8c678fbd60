/**
 * W2 many channels: CHANNELS channels (default 1,000) × SUBSCRIBERS_PER_CHANNEL subscribers (default
 * 10) over TRANSPORT, publishes spread round-robin over the channels at RATE_PER_S (default
 * 1,000 msg/s, one message per channel per second, so 10,000 deliveries/s). MODE=ramp as in W1.
 *
 * Measures: plate_delivery_latency, plate_delivered (expected: SUBSCRIBERS_PER_CHANNEL × successful
 * publishes), plate_errors. Passes while p99 latency ≤ 100 ms and nothing failed.
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

/** Channels. Env CHANNELS. */
const CHANNELS = envInt("CHANNELS", 1000);
/** Subscribers of each channel. Env SUBSCRIBERS_PER_CHANNEL. */
const SUBSCRIBERS_PER_CHANNEL = envInt("SUBSCRIBERS_PER_CHANNEL", 10);
/** Publish rate over all channels (fixed mode), or starting rate (ramp mode), in msg/s. Env RATE_PER_S. */
const RATE_PER_S = envInt("RATE_PER_S", 1000);

const SUBSCRIBERS = CHANNELS * SUBSCRIBERS_PER_CHANNEL;
const plan = runPlan(SUBSCRIBERS, publishSeconds());

/** The channel of subscriber or message number `n`: round-robin, so each channel gets an equal share. */
function channelOf(n: number): string {
  return `w2-${n % CHANNELS}`;
}

export const options: Options = {
  discardResponseBodies: true,
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    subscribers: subscriberScenario(SUBSCRIBERS, plan),
    publisher: publisherScenario(RATE_PER_S, plan),
  },
  thresholds: DELIVERY_THRESHOLDS,
};

/** One subscriber VU: waits for its connect turn, then holds its channel's subscription until the plan ends. */
export function subscriber(): void {
  holdSubscription(channelOf(takeConnectTurn()), closeAtMs(plan));
}

/** One publish per iteration, to the next channel in turn. */
export function publisher(): void {
  const seq = exec.scenario.iterationInTest;
  publish(channelOf(seq), seq);
}
