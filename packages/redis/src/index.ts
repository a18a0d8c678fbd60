export { DeafnessProbe } from "./probe.js";
export type { ProbeOptions } from "./probe.js";
export { reconnectOnReadOnly, redisRefusal } from "./refusals.js";
export type { RedisRefusal } from "./refusals.js";
