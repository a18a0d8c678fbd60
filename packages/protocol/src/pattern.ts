import type { ChannelName, ChannelPattern } from "./names.js";

/**
 * Channel patterns have exactly two wildcards: `*` matches any run of characters (`:` included,
 * possibly empty) and `?` matches exactly one character. Every other character is literal. A
 * pattern only ever matches channels of the plate it was given for; plates are kept apart by the
 * callers' maps, never by pattern text.
 */

/** A compiled pattern: test concrete channel names against it. */
export type ChannelMatcher = (channel: ChannelName) => boolean;

/**
 * Compiles a pattern to a matcher. A pattern without wildcards is a string comparison; one with
 * wildcards runs `globMatch`, which never backtracks more than once per character of the channel
 * (a regular expression of `.*` runs can take seconds on `*a*a*a*a*b`, and one subscriber's pattern
 * must not stall a node).
 */
export function compilePattern(pattern: ChannelPattern): ChannelMatcher {
  const text: string = pattern;
  if (!text.includes("*") && !text.includes("?")) {
    return (channel) => channel === text;
  }
  return (channel) => globMatch(text, channel);
}

/**
 * Matches `text` against a glob of `*` and `?`, in O(pattern × text) at worst: on a mismatch it
 * returns to the last `*` only, letting it absorb one more character.
 */
function globMatch(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let starText = 0;
  while (t < text.length) {
    const pc = pattern.charCodeAt(p);
    if (p < pattern.length && (pc === QUESTION || pc === text.charCodeAt(t))) {
      p += 1;
      t += 1;
    } else if (pc === STAR) {
      star = p;
      starText = t;
      p += 1;
    } else if (star !== -1) {
      p = star + 1;
      starText += 1;
      t = starText;
    } else {
      return false;
    }
  }
  while (pattern.charCodeAt(p) === STAR) p += 1;
  return p === pattern.length;
}

const STAR = 42; // "*"
const QUESTION = 63; // "?"

/** Whether a concrete channel matches a pattern. Compiles each call: for hot paths keep a matcher. */
export function matchesPattern(pattern: ChannelPattern, channel: ChannelName): boolean {
  return compilePattern(pattern)(channel);
}

/**
 * Whether every channel that `inner` matches is also matched by `outer`, decided conservatively:
 * `true` is always right, `false` may refuse a pattern that is in fact covered. This is how a key
 * limited to `user:*` may subscribe to the pattern `user:42:*` but not to `*`.
 *
 * `inner` is read as text over the channel alphabet plus two wildcard symbols. A literal of `outer`
 * must meet the same literal, `outer`'s `?` meets one literal or one `?`, and `outer`'s `*` meets
 * any run of anything, wildcards included. An `inner` `*` can thus only be absorbed by an `outer`
 * `*`, which is what makes the answer safe.
 */
export function patternCovers(outer: ChannelPattern, inner: ChannelPattern): boolean {
  const o = outer;
  const n = inner;
  // reachable[j]: the first i characters of outer can consume the first j characters of inner.
  let reachable = new Array<boolean>(n.length + 1).fill(false);
  reachable[0] = true;
  for (let i = 0; i < o.length; i++) {
    const oc = o[i];
    const next = new Array<boolean>(n.length + 1).fill(false);
    if (oc === "*") {
      let any = false;
      for (let j = 0; j <= n.length; j++) {
        any = any || (reachable[j] ?? false);
        next[j] = any;
      }
    } else {
      for (let j = 1; j <= n.length; j++) {
        if (!reachable[j - 1]) continue;
        const nc = n[j - 1];
        next[j] = oc === "?" ? nc !== "*" : nc === oc;
      }
    }
    reachable = next;
  }
  return reachable[n.length] ?? false;
}
