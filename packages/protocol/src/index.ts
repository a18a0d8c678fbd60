export type { PlateId, ChannelName, ChannelPattern, ClientToken, MessageId, Topic } from "./names.js";
export { isPlateId, isChannelName, isChannelPattern, isClientTokenShape, topicKey } from "./names.js";
export type { ChannelMatcher } from "./pattern.js";
export { compilePattern, matchesPattern, patternCovers } from "./pattern.js";
export type { ErrorCode, ErrorBody } from "./errors.js";
export { ERROR_CODES, PlateError, isErrorCode, toPlateError } from "./errors.js";
export type { Message, Envelope, Sender } from "./envelope.js";
export { encodeEnvelope, encodeSseMessage, bodyFromForeignPayload } from "./envelope.js";
export type { ReadyFrame, ResetFrame, ServerFrame, ClientFrame } from "./frames.js";
export type { Position, ResetReason } from "./positions.js";
export { formatPosition, parsePosition, comparePositions, newEpoch } from "./positions.js";
export { parseClientFrame, encodeServerFrame } from "./frames.js";
export type { Scope } from "./scopes.js";
export { SCOPES, isScope } from "./scopes.js";
export type {
  Ref,
  SubscriptionName,
  SubscriptionInfo,
  SubscriptionRequest,
  RealtimeReadyFrame,
  SubscribedFrame,
  UnsubscribedFrame,
  RealtimeResetFrame,
  RefusalFrame,
  RealtimeServerFrame,
  RealtimeClientFrame,
  PublishFrame,
  UnreadableFrame,
  FilterSpec,
} from "./realtime.js";
export { MAX_REF_CHARS, FILTER_SHAPE_MESSAGE, asFilterSpec, readFilterParam, parseRealtimeFrame, readName, encodeRealtimeFrame } from "./realtime.js";
export { readJsonObject } from "./json.js";
