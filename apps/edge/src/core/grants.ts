import { PlateError, compilePattern, patternCovers } from "@plate/protocol";
import type { ChannelPattern, Topic } from "@plate/protocol";
import type { KeyRecord } from "@plate/store";
import type { TokenClaims } from "./signed-tokens.js";
import type { Grant } from "./realtime.js";
import type { Tenancy } from "./tenancy.js";

/** What an API key allows a connection to subscribe to: its scope `subscribe` and channel list. */
export function keyGrant(tenancy: Tenancy, key: KeyRecord): Grant {
  return (topic) => tenancy.authorize(key, "subscribe", topic);
}

/**
 * What a several-topic client token allows: its channels, the channels its patterns match, and
 * the patterns they cover (`patternCovers`): nothing its minting key did not allow at minting.
 */
export function tokenGrant(topics: readonly Topic[]): Grant {
  const channels = new Set<string>();
  const patterns: ChannelPattern[] = [];
  for (const t of topics) {
    if (t.pattern) patterns.push(t.channel);
    else channels.add(t.channel);
  }
  const matchers = patterns.map(compilePattern);
  return (topic) => {
    const allowed = topic.pattern
      ? patterns.some((pattern) => patternCovers(pattern, topic.channel))
      : channels.has(topic.channel) || matchers.some((matches) => matches(topic.channel));
    if (!allowed) {
      throw new PlateError("forbidden", `This client credential may not use ${topic.pattern ? "the pattern" : "the channel"} "${topic.channel}".`);
    }
  };
}

/** What a signed client token (route 11) allows a connection to subscribe to: its `channels` and `patterns` claims. */
export function claimsGrant(claims: TokenClaims): Grant {
  return tokenGrant([
    ...claims.channels.map((channel) => ({ plateId: claims.plateId, pattern: false, channel }) as const),
    ...claims.patterns.map((channel) => ({ plateId: claims.plateId, pattern: true, channel }) as const),
  ]);
}
