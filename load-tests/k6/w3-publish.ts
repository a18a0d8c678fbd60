/**
 * W3 publish throughput: PUBLISHERS VUs (default 64) publishing to one channel as fast as the server
 * answers, each on its own keep-alive connection (k6's default), for PUBLISH_DURATION_S (default 30 s);
 * one WebSocket subscriber counts what arrives.
 *
 * Measures: http_reqs{scenario:publishers} (publishes/s = its count ÷ PUBLISH_DURATION_S; the rate
 * k6 prints averages over the whole run, connect window and drain included), http_req_duration,
 * plate_delivered (expected: the successful publishes) and plate_delivery_latency (informative: under
 * saturation it shows queueing, not the latency target). Passes when nothing failed.
 */
import exec from "k6/execution";
import type { Options } from "k6/options";
import {
  NO_ERRORS_THRESHOLDS,
  PUBLISH_DURATION_S,
  SUMMARY_TREND_STATS,
  closeAtMs,
  envInt,
  publish,
  runPlan,
  subscriberScenario,
} from "./common.ts";
import { holdWsSubscription } from "./subscribe.ts";

/** Concurrent publishing VUs. Env PUBLISHERS. */
const PUBLISHERS = envInt("PUBLISHERS", 64);
const CHANNEL = "w3-publish";

const plan = runPlan(1, PUBLISH_DURATION_S);

export const options: Options = {
  discardResponseBodies: true,
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    subscribers: subscriberScenario(1, plan),
    publishers: {
      executor: "constant-vus",
      exec: "publisher",
      vus: PUBLISHERS,
      startTime: `${plan.loadStartS}s`,
      duration: `${plan.loadS}s`,
    },
  },
  thresholds: NO_ERRORS_THRESHOLDS,
};

/** The one subscriber: connected before publishing starts, closed after the drain. */
export function subscriber(): void {
  holdWsSubscription(CHANNEL, closeAtMs(plan));
}

/** One publish per iteration, no pause: the next starts as soon as the answer arrives. */
export function publisher(): void {
  publish(CHANNEL, exec.scenario.iterationInTest);
}
