import type { Limits } from "../core/tenancy.js";

/** A node's limits for tests that build a `Tenancy` themselves: the settings' defaults, every rate off. */
export const TEST_LIMITS: Limits = {
  publishPerS: 0,
  publishBurst: 1,
  publishBytesPerS: 0,
  maxMessageBytes: 65_536,
  connections: 0,
  subscriptionsPerConnection: 100,
  presenceMembers: 1000,
  filters: 10_000,
  tokensPerS: 0,
  tokensBurst: 1,
  webhooksPerS: 0,
  webhooksBurst: 1,
  historyChannels: 10_000,
  historyBytes: 67_108_864,
  tokenBytes: 67_108_864,
};
