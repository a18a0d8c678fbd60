/**
 * Whether `channel` matches `pattern`, as the service matches them (the spec's "pattern"): `*` is
 * any run of characters, `:` included, possibly empty; `?` is exactly one character; every other
 * character stands for itself. No other glob syntax exists.
 *
 * The classic two-pointer walk with one backtrack point (the last `*`), so a pattern of many stars
 * takes O(pattern × channel) at worst, never the exponential time of a backtracking regex.
 */
export function matchesPattern(pattern: string, channel: string): boolean {
  let p = 0;
  let c = 0;
  /** Where the last `*` was in the pattern, and where in the channel its run ends for now. */
  let star = -1;
  let starEnd = 0;
  while (c < channel.length) {
    const want = pattern[p];
    if (want === "*") {
      star = p;
      starEnd = c;
      p += 1;
    } else if (want !== undefined && (want === "?" || want === channel[c])) {
      p += 1;
      c += 1;
    } else if (star !== -1) {
      // Let the last `*` take one more character and try again after it.
      p = star + 1;
      starEnd += 1;
      c = starEnd;
    } else {
      return false;
    }
  }
  while (pattern[p] === "*") p += 1;
  return p === pattern.length;
}
