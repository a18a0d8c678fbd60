export { reconnectOnReadOnly, redisRefusal } from "./refusals.js";
export type { RedisRefusal } from "./refusals.js";
