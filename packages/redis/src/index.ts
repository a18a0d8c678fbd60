export { DeafnessProbe } from "./probe.js";
export type { ProbeOptions } from "./probe.js";
export { RefusalWarnings, reconnectOnReadOnly, redisRefusal } from "./refusals.js";
export type { RedisRefusal, Warn } from "./refusals.js";
export { closeConnection, connectCommands, connectNode, connectPrimary, isCommandReady, masterOf, parseHostPorts, urlOptions } from "./target.js";
export type { ClusterSettings, Commands, HostPort, RedisTarget } from "./target.js";
export { SLOT_COUNT, checkKeyPrefix, keySlot } from "./slot.js";
