/**
 * W4 idle connections: IDLE_CONNECTIONS subscriptions (default 10,000) over TRANSPORT, opened at
 * CONNECT_RATE_PER_S and held for HOLD_S (default 60 s) with no traffic, spread over IDLE_CHANNELS
 * channels (default 1).
 *
 * The figure this workload exists for, server memory per connection, is read outside k6: sample the
 * server's RSS (e.g. `ps -o rss= -p <pid>`) before the run and during the hold, and divide the
 * difference by IDLE_CONNECTIONS. k6 itself only shows that every connection opened and stayed
 * open: passes when plate_errors is 0.
 */
import type { Options } from "k6/options";
import { NO_ERRORS_THRESHOLDS, closeAtMs, envInt, runPlan, subscriberScenario, takeConnectTurn } from "./common.ts";
import { holdSubscription } from "./subscribe.ts";

/** Connections to hold. Env IDLE_CONNECTIONS. */
const IDLE_CONNECTIONS = envInt("IDLE_CONNECTIONS", 10000);
/** How long all connections stay open together, in s. Env HOLD_S. */
const HOLD_S = envInt("HOLD_S", 60);
/** Channels the connections are spread over, round-robin. Env IDLE_CHANNELS. */
const IDLE_CHANNELS = envInt("IDLE_CHANNELS", 1);

const plan = runPlan(IDLE_CONNECTIONS, HOLD_S);

export const options: Options = {
  scenarios: { subscribers: subscriberScenario(IDLE_CONNECTIONS, plan) },
  thresholds: NO_ERRORS_THRESHOLDS,
};

/** One connection: opened in its turn, held until the end of the hold. */
export function subscriber(): void {
  const index = takeConnectTurn();
  holdSubscription(`w4-idle-${index % IDLE_CHANNELS}`, closeAtMs(plan));
}
