import { PlateError, isChannelName, isChannelPattern, isPlateId } from "@plate/protocol";
import type { ChannelName, PlateId, Topic } from "@plate/protocol";

/** Validates a plate id from a path (`invalid_plate`). */
export function plateParam(value: string): PlateId {
  if (!isPlateId(value)) {
    throw new PlateError("invalid_plate", "A plate id has 1 to 64 of A-Z, a-z, 0-9, _ and -.");
  }
  return value;
}

/** Validates a plate and a channel (or a pattern, when `pattern`) from a path (`invalid_channel`). */
export function topicParam(plateId: PlateId, channel: string, pattern: boolean): Topic {
  if (pattern) {
    if (!isChannelPattern(channel)) {
      throw new PlateError(
        "invalid_channel",
        "A channel pattern has 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ - and the wildcards * and ?.",
      );
    }
    return { plateId, pattern: true, channel };
  }
  return { plateId, pattern: false, channel: channelParam(channel) };
}

/** Validates a concrete channel from a path (`invalid_channel`). */
export function channelParam(channel: string): ChannelName {
  if (!isChannelName(channel)) {
    throw new PlateError("invalid_channel", "A channel name has 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ and -.");
  }
  return channel;
}

/** Reads `?pattern=true` of a subscribe route. */
export function patternQuery(value: string | null | undefined): boolean {
  if (value === undefined || value === null || value === "" || value === "false" || value === "0") return false;
  if (value === "true" || value === "1") return true;
  throw new PlateError("invalid_parameter", '"pattern" must be true or false.');
}
