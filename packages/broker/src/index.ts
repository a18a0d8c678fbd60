export type { Broker, MessageListener, Unsubscribe } from "./broker.js";
export { MemoryBroker } from "./memory-broker.js";
