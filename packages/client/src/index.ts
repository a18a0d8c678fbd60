export { PlateClient, subscribePath } from "./client.js";
export type {
  ClientPathOptions,
  PlateClientOptions,
  RealtimePathOptions,
  RealtimeTokenOptions,
  SubscribePathOptions,
} from "./client.js";
export { realtimePath, realtimeWithToken } from "./client.js";
export { PlateClientError } from "./errors.js";
export type { ClientErrorCode, ErrorCode } from "./errors.js";
export type { SubscriptionFilter } from "./filter.js";
export { matchesPattern } from "./pattern.js";
export { DEFAULT_MAX_PUBLISH_FRAME_BYTES, MAX_QUEUED_PUBLISHES, RECENT_IDS_KEPT } from "./realtime.js";
export type { RealtimeConnection, RealtimeOptions, RealtimeSubscribeOptions, RealtimeSubscription } from "./realtime.js";
export { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RECONNECT } from "./subscription.js";
export type { ReconnectOptions, SubscribeOptions, Unsubscribe } from "./subscription.js";
export { TOKEN_REFRESH_LIFETIME_SHARE, TOKEN_REFRESH_MAX_MARGIN_MS, TOKEN_REFRESH_MIN_DELAY_MS } from "./token.js";
export type { ClientToken, TokenProvider } from "./token.js";
export type {
  ChannelOccupancy,
  ChannelPresence,
  ClientPath,
  ConnectionState,
  Envelope,
  Occupancy,
  PresenceEntry,
  PresenceMember,
  PresenceMembers,
  Published,
  Ready,
  RealtimePublished,
  RealtimeReady,
  RealtimeReset,
  RealtimeSubscriptionState,
  Reset,
  ResetReason,
  Sender,
  SubscriptionInfo,
  SubscriptionName,
  SubscriptionState,
} from "./types.js";
export type { WebSocketConstructor } from "./ws.js";
