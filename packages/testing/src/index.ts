export type { RedisOptions, RedisServer } from "./redis-server.js";
export { startRedis, freePort } from "./redis-server.js";
export type { TcpProxy } from "./tcp-proxy.js";
export { startTcpProxy } from "./tcp-proxy.js";
export type { SseEvent } from "./sse-client.js";
export { SseClient } from "./sse-client.js";
export { eventually } from "./eventually.js";
export type { RedisPair } from "./redis-failover.js";
export { startRedisPair, redisCommand, whileOutOfMemory } from "./redis-failover.js";
