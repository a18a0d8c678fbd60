export type { Broker, GapPhase, HistoryBudget, HistoryRead, MessageListener, PublishRate, PublishRequest, PublishResult, RateState, Replay, Retention, Unsubscribe } from "./broker.js";
export { HISTORY_COST, rateLimited, takeRate } from "./broker.js";
export { MemoryBroker } from "./memory-broker.js";
export type { Presence, PresenceChange, PresenceListener, PresenceState, PresenceTimes, Tracked } from "./presence.js";
export type { RedisBrokerOptions } from "./redis-broker.js";
export { RedisBroker, encodeRedisPayload } from "./redis-broker.js";
export { RedisNames, escapeGlob, patternToGlob } from "./redis-names.js";
