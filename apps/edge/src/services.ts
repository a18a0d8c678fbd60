import type { Broker } from "@plate/broker";
import type { DirectSend } from "@plate/direct-send";
import type { Config } from "./config.js";
import type { Connections } from "./core/connections.js";
import type { Publisher } from "./core/publisher.js";
import type { Realtime } from "./core/realtime.js";
import type { PresenceHub } from "./core/presence.js";
import type { Occupancy } from "./core/occupancy.js";
import type { Webhooks } from "./core/webhooks.js";
import type { Filters } from "./core/filters.js";
import type { Usage } from "./core/usage.js";
import type { Subscriptions } from "./core/subscriptions.js";
import type { Tenancy } from "./core/tenancy.js";
import type { SignedTokens } from "./core/signed-tokens.js";
import type { Tokens } from "./core/tokens.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";
import type { SubscriberNoDelay } from "./transports/no-delay.js";

/** What the transports (HTTP routes, WebSocket upgrades) work with. Built once per node. */
export interface Services {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly broker: Broker;
  readonly tenancy: Tenancy;
  readonly tokens: Tokens;
  /** A plate's signing keys and the signed client tokens (JWT) they sign (route 11). */
  readonly signedTokens: SignedTokens;
  readonly publisher: Publisher;
  readonly connections: Connections;
  readonly subscriptions: Subscriptions;
  /** Route 9's live changes, and this node's client ids. */
  readonly realtime: Realtime;
  /** Route 10: who is on each channel. */
  readonly presence: PresenceHub;
  /** Route 10: which channels have subscribers, over every node. */
  readonly occupancy: Occupancy;
  /** Route 10: each plate's webhook and its channel events. */
  readonly webhooks: Webhooks;
  /** Route 13: the node's filter engine (filters are checked when a client path is minted with one). */
  readonly filters: Filters;
  /** What each plate uses, by hour (issue 17's metering). */
  readonly usage: Usage;
  /** Whether subscriber sockets send at once now (`SUBSCRIBER_NO_DELAY`). */
  readonly subscriberNoDelay: SubscriberNoDelay;
  /** The addon that writes a subscriber's message in one send(2), or undefined (`SUBSCRIBER_DIRECT_SEND` off, or not built). */
  readonly directSend: DirectSend | undefined;
  /** True once the node drains: readiness fails and new connections are refused. */
  readonly draining: () => boolean;
  /**
   * Why the node cannot serve right now, or undefined while it can: not draining, the broker and
   * the store reachable, in step with the store (`BOOTSTRAP_PLATES` provisioned, no missed
   * revocation unchecked: see `Resync`). For `/readyz`.
   */
  readonly notReady: () => string | undefined;
}
