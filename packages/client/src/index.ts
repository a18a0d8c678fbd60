export { PlateClient, subscribePath } from "./client.js";
export type { ClientPathOptions, PlateClientOptions, SubscribePathOptions } from "./client.js";
export { PlateClientError } from "./errors.js";
export type { ClientErrorCode, ErrorCode } from "./errors.js";
export { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RECONNECT } from "./subscription.js";
export type { ReconnectOptions, SubscribeOptions, Unsubscribe } from "./subscription.js";
export type { ClientPath, Envelope, Published, Ready, Reset, ResetReason, SubscriptionState } from "./types.js";
export type { WebSocketConstructor } from "./ws.js";
