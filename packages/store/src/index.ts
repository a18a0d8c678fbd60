export type { Store, PlateRecord, PlateHistory, PlateLimits, KeyRecord, TokenRecord, ClaimResult, Revocation, SigningAlgorithm, SigningKeyRecord, WebhookClaim, WebhookEvent, WebhookRecord } from "./store.js";
export { signingKeyOwner } from "./store.js";
export { MemoryStore } from "./memory-store.js";
export type { MemoryStoreOptions } from "./memory-store.js";
export { RedisStore } from "./redis-store.js";
export type { RedisStoreOptions } from "./redis-store.js";
