import { FILTER_SHAPE_MESSAGE, PlateError, asFilterSpec, isChannelName, isChannelPattern, isPlateId, readFilterParam } from "@plate/protocol";
import type { ChannelName, FilterSpec, PlateId, Topic } from "@plate/protocol";

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

/**
 * Route 9's initial subscriptions from a query: `channel` and `pattern`, each repeatable, and
 * `since.<channel>=<id>` to resume a channel (`since.<pattern>` asks a pattern to, which gets `reset`). `lastEventId` (SSE's `Last-Event-ID`, plate-wide)
 * resumes every subscription and wins over the query's `since`, as the newer: a browser's
 * EventSource reconnects to the same URL with it. Throws `bad_request` past `max`.
 */
export function realtimeQuery(plateId: PlateId, query: URLSearchParams, max: number, lastEventId?: string): { topic: Topic; since?: string; filter?: FilterSpec }[] {
  const asked: { topic: Topic; since?: string; filter?: FilterSpec }[] = [];
  const seen = new Set<string>();
  const add = (topic: Topic, since: string | undefined) => {
    const key = (topic.pattern ? "p/" : "c/") + topic.channel;
    if (seen.has(key)) return;
    seen.add(key);
    if (asked.length >= max) {
      throw new PlateError("bad_request", `A connection may hold at most ${max} subscriptions.`);
    }
    // `filter.<name>` (route 13): the filter of the channel or pattern of that name.
    const filter = readFilterParam(query.get(`filter.${topic.channel}`));
    asked.push({ topic, ...(since === undefined || since === "" ? {} : { since }), ...(filter === undefined ? {} : { filter }) });
  };
  for (const channel of query.getAll("channel")) add(topicParam(plateId, channel, false), lastEventId ?? query.get(`since.${channel}`) ?? undefined);
  // A pattern has no history: asked to resume (`since.<pattern>` or Last-Event-ID), it gets `reset`.
  for (const pattern of query.getAll("pattern")) add(topicParam(plateId, pattern, true), lastEventId ?? query.get(`since.${pattern}`) ?? undefined);
  return asked;
}

/**
 * Route 4's `filter` (route 13): a JSON object in a POST body, or its JSON text (a query, or a
 * string in the body). Absent: none. Throws `invalid_filter` for anything else.
 */
export function filterParam(value: unknown): FilterSpec | undefined {
  if (value === undefined || typeof value === "string") return readFilterParam(value);
  const filter = asFilterSpec(value);
  if (filter === undefined) throw new PlateError("invalid_filter", FILTER_SHAPE_MESSAGE);
  return filter;
}
