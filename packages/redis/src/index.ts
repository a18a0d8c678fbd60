export { DeafnessProbe } from "./probe.js";
export type { ProbeOptions } from "./probe.js";
export { RefusalWarnings, reconnectOnReadOnly, redisRefusal } from "./refusals.js";
export type { RedisRefusal, Warn } from "./refusals.js";
