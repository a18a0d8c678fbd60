import { PlateError, compilePattern, patternCovers } from "@plate/protocol";
import type { ChannelName, ChannelPattern, PlateId, Topic } from "@plate/protocol";
import type { KeyRecord } from "@plate/store";
import type { TokenClaims } from "./signed-tokens.js";
import type { Tenancy } from "./tenancy.js";

/**
 * What a route 9 connection's credential allows it: each check throws `forbidden` for anything
 * else. A refreshed signed token replaces it.
 */
export interface Grant {
  /** May it subscribe to `topic` (a channel, or a pattern)? */
  readonly subscribe: (topic: Topic) => void;
  /** May it publish to the channel `topic` (route 12's `publish` frame)? */
  readonly publish: (topic: Topic) => void;
  /** May it be a member of the channel `topic` (route 10's `presence.track`)? */
  readonly presence: (topic: Topic) => void;
}

/** What an API key allows a connection: its scopes `subscribe` and `publish`, and its channel list. */
export function keyGrant(tenancy: Tenancy, key: KeyRecord): Grant {
  return {
    subscribe: (topic) => tenancy.authorize(key, "subscribe", topic),
    publish: (topic) => tenancy.authorize(key, "publish", topic),
    // Any connection that may subscribe to a channel may be seen there.
    presence: (topic) => tenancy.authorize(key, "subscribe", topic),
  };
}

/**
 * What a several-topic client token (route 5) allows: subscribing to its channels, the channels its
 * patterns match, and the patterns they cover (`patternCovers`): nothing its minting key did not
 * allow at minting. Route 4 mints no publishing right, so it may not publish.
 */
export function tokenGrant(topics: readonly Topic[]): Grant {
  const may = topicsAllowed(topics);
  return {
    subscribe: (topic) => {
      if (!may(topic)) throw refused(topic, "use");
    },
    publish: (topic) => {
      throw new PlateError("forbidden", `This client socket path may not publish (to "${topic.channel}"); publishing from a connection takes a signed client token with a "publish" claim, or an API key with scope publish.`);
    },
    presence: (topic) => {
      if (!may(topic)) throw refused(topic, "use");
    },
  };
}

/**
 * What a signed client token (route 11) allows: subscribing to its `channels` and `patterns` claims
 * (as a client token's topics), and publishing to the channels its `publish` patterns match.
 */
export function claimsGrant(claims: TokenClaims): Grant {
  const subscribe = topicsAllowed([
    ...claims.channels.map((channel) => topicIn(claims.plateId, false, channel)),
    ...claims.patterns.map((channel) => topicIn(claims.plateId, true, channel)),
  ]);
  const publish = claims.publish.map(compilePattern);
  return {
    subscribe: (topic) => {
      if (!subscribe(topic)) throw refused(topic, "use");
    },
    publish: (topic) => {
      if (topic.pattern || !publish.some((matches) => matches(topic.channel))) throw refused(topic, "publish to");
    },
    presence: (topic) => {
      if (!claims.presence) throw new PlateError("forbidden", 'This client token may not be seen in presence: it has no "presence": true claim.');
      if (!subscribe(topic)) throw refused(topic, "use");
    },
  };
}

/** Whether `topics` allow a subscription: a channel named or matched, a pattern covered. */
function topicsAllowed(topics: readonly Topic[]): (topic: Topic) => boolean {
  const channels = new Set<string>();
  const patterns: ChannelPattern[] = [];
  for (const t of topics) {
    if (t.pattern) patterns.push(t.channel);
    else channels.add(t.channel);
  }
  const matchers = patterns.map(compilePattern);
  return (topic) =>
    topic.pattern
      ? patterns.some((pattern) => patternCovers(pattern, topic.channel))
      : channels.has(topic.channel) || matchers.some((matches) => matches(topic.channel));
}

function topicIn(plateId: PlateId, pattern: boolean, channel: ChannelName | ChannelPattern): Topic {
  return { plateId, pattern, channel } as Topic;
}

function refused(topic: Topic, verb: string): PlateError {
  return new PlateError("forbidden", `This client credential may not ${verb} ${topic.pattern ? "the pattern" : "the channel"} "${topic.channel}".`);
}
