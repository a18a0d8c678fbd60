/**
 * Settings, metrics, the publish helper and the run plan shared by Plate's k6 workloads (w1–w4).
 *
 * Settings come from k6's `__ENV` (`k6 run -e NAME=value ...`); each number carries its unit in its
 * name. Latency is measured from the `t` a publisher puts in the message to the moment a subscriber
 * in the same k6 process reads it, so both ends use one clock.
 */
import { check, sleep } from "k6";
import exec from "k6/execution";
import http from "k6/http";
import { Counter, Trend } from "k6/metrics";
import type { Scenario, Stage, Threshold } from "k6/options";

// --- __ENV readers -----------------------------------------------------------------------------

/** `__ENV[name]`, or `fallback` when unset or empty. */
export function envString(name: string, fallback: string): string {
  const value = __ENV[name];
  return value === undefined || value === "" ? fallback : value;
}

/** `__ENV[name]` as a positive integer, or `fallback`; anything else stops the run at init. */
export function envInt(name: string, fallback: number): number {
  const raw = __ENV[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer, got "${raw}"`);
  }
  return value;
}

/** `__ENV[name]` if it is one of `choices`, or `fallback`; anything else stops the run at init. */
export function envChoice<T extends string>(name: string, choices: readonly T[], fallback: T): T {
  const raw = envString(name, fallback);
  const found = choices.find((choice) => choice === raw);
  if (found === undefined) throw new Error(`${name} must be one of ${choices.join("|")}, got "${raw}"`);
  return found;
}

// --- Target ------------------------------------------------------------------------------------

/** Plate's origin, no trailing slash. Env BASE_URL. */
export const BASE_URL = envString("BASE_URL", "http://127.0.0.1:8080").replace(/\/+$/, "");
/** The same origin with the ws:// or wss:// scheme. */
export const WS_BASE_URL = BASE_URL.replace(/^http/, "ws");
/** The plate (tenant) every workload uses. Env PLATE. */
export const PLATE = envString("PLATE", "bench");
/** An API key of PLATE with scopes publish and subscribe. Env KEY; required. */
export const KEY = envString("KEY", "");
if (KEY === "") throw new Error(`set -e KEY=<an API key of plate "${PLATE}"> (see load-tests/k6/README.md)`);

/** Sent on every publish and subscribe request. */
export const AUTH_HEADERS: Record<string, string> = { Authorization: `Bearer ${KEY}` };

/** Subscriber transport. Env TRANSPORT; `sse` needs a k6 built with xk6-sse (x-sse.d.ts). */
export const TRANSPORT = envChoice("TRANSPORT", ["ws", "sse"] as const, "ws");
/** `fixed`: one publish rate; `ramp`: the rate rises until delivery latency breaks. Env MODE. */
export const MODE = envChoice("MODE", ["fixed", "ramp"] as const, "fixed");

/** The route path of `channel` in PLATE; bench channel names need no URL encoding. */
export function channelPath(channel: string): string {
  return `/${PLATE}/pubsub/${channel}`;
}

// --- Metrics -----------------------------------------------------------------------------------

/** Trend of publish-to-receipt time per delivered message, in ms. */
export const DELIVERY_LATENCY_METRIC = "plate_delivery_latency";
/** Counter of messages received by subscribers. */
export const DELIVERED_METRIC = "plate_delivered";
/** Counter of failures, tagged `op` (publish, ws_error, ws_closed_early, sse_error, ...). */
export const ERRORS_METRIC = "plate_errors";

export const deliveryLatency = new Trend(DELIVERY_LATENCY_METRIC, true);
export const delivered = new Counter(DELIVERED_METRIC);
export const errors = new Counter(ERRORS_METRIC);

/** The contract's latency target: p99 publish-to-receipt at or under this, in ms. */
export const DELIVERY_LATENCY_P99_LIMIT_MS = 100;

/** Pass only without a single failure. */
export const NO_ERRORS_THRESHOLDS: Record<string, Threshold[]> = { [ERRORS_METRIC]: ["count<1"] };
/** Pass only without failures and with p99 delivery latency within the limit. */
export const DELIVERY_THRESHOLDS: Record<string, Threshold[]> = {
  ...NO_ERRORS_THRESHOLDS,
  [DELIVERY_LATENCY_METRIC]: [`p(99)<=${DELIVERY_LATENCY_P99_LIMIT_MS}`],
};
/** Percentiles printed in the end-of-test summary. */
export const SUMMARY_TREND_STATS = ["avg", "min", "med", "p(90)", "p(99)", "p(99.9)", "max", "count"];

// --- Publishing --------------------------------------------------------------------------------

/** What every benchmark message carries: `s` a sequence number, `t` the send time in epoch ms. */
export interface BenchPayload {
  s: number;
  t: number;
}

/** True when `value` is a BenchPayload (a message published by these scripts). */
export function isBenchPayload(value: unknown): value is BenchPayload {
  if (typeof value !== "object" || value === null) return false;
  const { s, t } = value as Partial<Record<keyof BenchPayload, unknown>>;
  return typeof s === "number" && typeof t === "number";
}

const PUBLISH_PARAMS = {
  headers: { ...AUTH_HEADERS, "Content-Type": "application/json" },
  // One `name` for every channel, so W2's 1,000 URLs make one series, not 1,000.
  tags: { name: "publish" },
};

/** POSTs `{"message":{"s":seq,"t":now}}` to `channel` (route 1); anything but 200 counts an error. */
export function publish(channel: string, seq: number): void {
  const payload: BenchPayload = { s: seq, t: Date.now() };
  const res = http.post(
    `${BASE_URL}${channelPath(channel)}/publish`,
    JSON.stringify({ message: payload }),
    PUBLISH_PARAMS,
  );
  if (!check(res, { "publish answers 200": (r) => r.status === 200 })) errors.add(1, { op: "publish" });
}

// --- Run plan ----------------------------------------------------------------------------------

/** Subscribers open at this rate, in connections/s, so a run does not start with a connect storm.
 * Env CONNECT_RATE_PER_S. */
export const CONNECT_RATE_PER_S = envInt("CONNECT_RATE_PER_S", 1000);
/** Pause after the last subscriber's turn before the load starts, in s. */
export const CONNECT_SETTLE_S = 2;
/** How long publishers run in fixed mode and in W3, in s. Env PUBLISH_DURATION_S. */
export const PUBLISH_DURATION_S = envInt("PUBLISH_DURATION_S", 30);
/** Subscribers stay connected this long after the load ends, for late deliveries, in s. Env DRAIN_S. */
export const DRAIN_S = envInt("DRAIN_S", 5);
/** Ramp mode: the rate is multiplied by this every RAMP_STEP_S. */
export const RAMP_RATE_FACTOR_PER_STEP = 1.25;
/** Ramp mode: length of one step, in s. */
export const RAMP_STEP_S = 3;
/** Ramp mode: number of steps (20 steps take 100 msg/s to about 8,700 msg/s in 60 s). Env RAMP_STEPS. */
export const RAMP_STEPS = envInt("RAMP_STEPS", 20);
/** Arrival-rate publishers: VUs allocated before the start. Env PUBLISHER_PREALLOCATED_VUS. */
export const PUBLISHER_PREALLOCATED_VUS = envInt("PUBLISHER_PREALLOCATED_VUS", 50);
/** Arrival-rate publishers: most VUs k6 may add when requests slow down. Env PUBLISHER_MAX_VUS. */
export const PUBLISHER_MAX_VUS = envInt("PUBLISHER_MAX_VUS", 1000);
/** Longest silence before the server writes `: ping` on an SSE stream, in s: the contract's bound
 * and the server's default HEARTBEAT_MS (docs/API.md, route 2). */
export const SSE_PING_INTERVAL_S = 25;
/** A subscriber VU is interrupted this long after its planned close, in s: an SSE stream can only
 * be closed when an event (at worst a ping) arrives. */
export const SUBSCRIBER_STOP_SLACK_S = SSE_PING_INTERVAL_S + 5;

/** The phases of one run, in s from the start of the test. */
export interface RunPlan {
  /** Subscribers connect during [0, loadStartS). */
  loadStartS: number;
  /** Publishing (W1–W3) or holding idle (W4) lasts this long. */
  loadS: number;
  /** Subscribers close at this time. */
  closeS: number;
}

/** Load length in the current MODE, in s. */
export function publishSeconds(): number {
  return MODE === "ramp" ? RAMP_STEPS * RAMP_STEP_S : PUBLISH_DURATION_S;
}

/** The plan for `subscribers` connections followed by `loadS` seconds of load and a drain. */
export function runPlan(subscribers: number, loadS: number): RunPlan {
  const loadStartS = Math.ceil(subscribers / CONNECT_RATE_PER_S) + CONNECT_SETTLE_S;
  return { loadStartS, loadS, closeS: loadStartS + loadS + DRAIN_S };
}

/** One iteration per subscriber VU, all started at 0; it returns when its subscription closes. */
export function subscriberScenario(subscribers: number, plan: RunPlan): Scenario {
  return {
    executor: "per-vu-iterations",
    exec: "subscriber",
    vus: subscribers,
    iterations: 1,
    maxDuration: `${plan.closeS + SUBSCRIBER_STOP_SLACK_S}s`,
    gracefulStop: "5s",
  };
}

/** Publishing at `ratePerS` msg/s for PUBLISH_DURATION_S (MODE=fixed) or rising ×1.25 every 3 s (MODE=ramp). */
export function publisherScenario(ratePerS: number, plan: RunPlan): Scenario {
  const shared = {
    exec: "publisher",
    startTime: `${plan.loadStartS}s`,
    timeUnit: "1s",
    preAllocatedVUs: PUBLISHER_PREALLOCATED_VUS,
    maxVUs: PUBLISHER_MAX_VUS,
  };
  if (MODE === "fixed") {
    return { ...shared, executor: "constant-arrival-rate", rate: ratePerS, duration: `${plan.loadS}s` };
  }
  // k6 interpolates linearly inside a stage, so the rate ends step i at ratePerS × 1.25^(i+1).
  const stages: Stage[] = Array.from({ length: RAMP_STEPS }, (_, i) => ({
    duration: `${RAMP_STEP_S}s`,
    target: Math.round(ratePerS * RAMP_RATE_FACTOR_PER_STEP ** (i + 1)),
  }));
  return { ...shared, executor: "ramping-arrival-rate", startRate: ratePerS, stages };
}

/**
 * For a subscriber VU: sleeps until its turn in the connect window (CONNECT_RATE_PER_S) and returns
 * its 0-based index among the scenario's subscribers.
 */
export function takeConnectTurn(): number {
  const index = exec.scenario.iterationInTest;
  sleep(index / CONNECT_RATE_PER_S);
  return index;
}

/** For a subscriber VU: the epoch ms at which `plan` closes subscriptions. */
export function closeAtMs(plan: RunPlan): number {
  return exec.scenario.startTime + plan.closeS * 1000;
}
