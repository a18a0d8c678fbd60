export { PlateClient, subscribePath } from "./client.js";
export type { ClientPathOptions, PlateClientOptions, RealtimePathOptions, SubscribePathOptions } from "./client.js";
export { realtimePath } from "./client.js";
export { PlateClientError } from "./errors.js";
export type { ClientErrorCode, ErrorCode } from "./errors.js";
export { matchesPattern } from "./pattern.js";
export { RECENT_IDS_KEPT } from "./realtime.js";
export type { RealtimeConnection, RealtimeOptions, RealtimeSubscribeOptions, RealtimeSubscription } from "./realtime.js";
export { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RECONNECT } from "./subscription.js";
export type { ReconnectOptions, SubscribeOptions, Unsubscribe } from "./subscription.js";
export type {
  ClientPath,
  ConnectionState,
  Envelope,
  Published,
  Ready,
  RealtimeReady,
  RealtimeReset,
  RealtimeSubscriptionState,
  Reset,
  ResetReason,
  SubscriptionInfo,
  SubscriptionName,
  SubscriptionState,
} from "./types.js";
export type { WebSocketConstructor } from "./ws.js";
