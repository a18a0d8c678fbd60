export type { RedisServer } from "./redis-server.js";
export { startRedis, freePort } from "./redis-server.js";
