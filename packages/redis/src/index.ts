export { DeafnessProbe } from "./probe.js";
export type { ProbeOptions } from "./probe.js";
export { RefusalWarnings, reconnectOnReadOnly, redisRefusal } from "./refusals.js";
export type { RedisRefusal, Warn } from "./refusals.js";
export { connectCommands, connectNode, connectPrimary, isCluster, isCommandReady, masterOf, parseHostPorts, urlOptions } from "./target.js";
export type { ClusterSettings, Commands, HostPort, RedisTarget } from "./target.js";
export { SLOT_COUNT, keySlot } from "./slot.js";
