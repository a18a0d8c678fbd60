export type { Store, PlateRecord, PlateHistory, PlateLimits, UsageAdd, UsageCounter, UsageHour, KeyRecord, TokenRecord, ClaimResult, Revocation, SigningAlgorithm, SigningKeyRecord, WebhookClaim, WebhookEvent, WebhookRecord } from "./store.js";
export { TOKEN_COST, USAGE_COUNTERS, signingKeyOwner } from "./store.js";
export { MemoryStore } from "./memory-store.js";
export type { MemoryStoreOptions } from "./memory-store.js";
export { RedisStore } from "./redis-store.js";
export type { RedisStoreOptions } from "./redis-store.js";
