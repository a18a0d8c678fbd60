import { describe, expect, it } from "vitest";
import type { ChannelName, ChannelPattern } from "./names.js";
import { compilePattern, matchesPattern, patternCovers } from "./pattern.js";

const p = (text: string): ChannelPattern => text as ChannelPattern;
const c = (text: string): ChannelName => text as ChannelName;

/** The spec's pattern semantics written the slow, obvious way, to compare against. */
function referenceMatch(pattern: string, channel: string): boolean {
  if (pattern === "") return channel === "";
  const head = pattern[0];
  const rest = pattern.slice(1);
  if (head === "*") {
    for (let i = 0; i <= channel.length; i++) {
      if (referenceMatch(rest, channel.slice(i))) return true;
    }
    return false;
  }
  if (channel === "") return false;
  if (head === "?" || head === channel[0]) return referenceMatch(rest, channel.slice(1));
  return false;
}

/** Every string of length `min`..`max` over `alphabet`. */
function allStrings(alphabet: string, min: number, max: number): string[] {
  const out: string[] = [];
  let layer = [""];
  for (let length = 0; length <= max; length++) {
    if (length >= min) out.push(...layer);
    layer = layer.flatMap((prefix) => [...alphabet].map((char) => prefix + char));
  }
  return out;
}

describe("compilePattern", () => {
  it("matches a pattern without wildcards to that channel only", () => {
    const matches = compilePattern(p("alerts"));
    expect(matches(c("alerts"))).toBe(true);
    expect(matches(c("alert"))).toBe(false);
    expect(matches(c("alerts2"))).toBe(false);
    expect(matches(c("Alerts"))).toBe(false);
  });

  it("lets * match any run, : included", () => {
    const matches = compilePattern(p("user:*"));
    expect(matches(c("user:1"))).toBe(true);
    expect(matches(c("user:42:events"))).toBe(true);
    expect(matches(c("user:a:b:c:d"))).toBe(true);
    expect(matches(c("users:1"))).toBe(false);
    expect(matches(c("xuser:1"))).toBe(false);
  });

  it("lets * match the empty run", () => {
    expect(matchesPattern(p("user:*"), c("user:"))).toBe(true);
    expect(matchesPattern(p("a*b"), c("ab"))).toBe(true);
    expect(matchesPattern(p("*alerts"), c("alerts"))).toBe(true);
  });

  it("lets a lone * match every channel", () => {
    const matches = compilePattern(p("*"));
    for (const channel of ["a", "user:1:events", "room.lobby", "~@=-_.:", "x".repeat(200)]) {
      expect(matches(c(channel)), channel).toBe(true);
    }
  });

  it("lets * sit in the middle and match across separators", () => {
    const matches = compilePattern(p("user:*:events"));
    expect(matches(c("user:1:events"))).toBe(true);
    expect(matches(c("user:2:3:events"))).toBe(true);
    expect(matches(c("user::events"))).toBe(true);
    expect(matches(c("user:1:other"))).toBe(false);
  });

  it("treats a run of stars like one star", () => {
    for (const channel of ["ab", "axb", "a:x:b", "ba"]) {
      expect(matchesPattern(p("a***b"), c(channel))).toBe(matchesPattern(p("a*b"), c(channel)));
    }
  });

  it("lets ? match exactly one character, : included", () => {
    const matches = compilePattern(p("room.?"));
    expect(matches(c("room.1"))).toBe(true);
    expect(matches(c("room.:"))).toBe(true);
    expect(matches(c("room."))).toBe(false);
    expect(matches(c("room.12"))).toBe(false);
    expect(matchesPattern(p("??"), c("ab"))).toBe(true);
    expect(matchesPattern(p("??"), c("a"))).toBe(false);
    expect(matchesPattern(p("??"), c("abc"))).toBe(false);
  });

  it("treats . as a literal dot, not any character", () => {
    expect(matchesPattern(p("room.lobby"), c("room.lobby"))).toBe(true);
    expect(matchesPattern(p("room.lobby"), c("roomXlobby"))).toBe(false);
    expect(matchesPattern(p("room.?"), c("roomX1"))).toBe(false);
    expect(matchesPattern(p("a.*"), c("abx"))).toBe(false);
    expect(matchesPattern(p("a.*"), c("a.x"))).toBe(true);
  });

  it("treats - and the other channel punctuation as literals", () => {
    expect(matchesPattern(p("a-c"), c("a-c"))).toBe(true);
    expect(matchesPattern(p("a-c"), c("b"))).toBe(false);
    expect(matchesPattern(p("a-*"), c("a-x"))).toBe(true);
    expect(matchesPattern(p("a-*"), c("ab"))).toBe(false);
    expect(matchesPattern(p("x@y=z~w_*"), c("x@y=z~w_1"))).toBe(true);
    expect(matchesPattern(p("x@y=z~w_*"), c("x@y=z~wX1"))).toBe(false);
  });

  it.each([
    ["a+b", "a+b", ["aab", "ab"]],
    ["(a|b)", "(a|b)", ["a", "b"]],
    ["[ab]", "[ab]", ["a", "b"]],
    ["a{2}", "a{2}", ["aa"]],
    ["^a$", "^a$", ["a"]],
    ["a\\d", "a\\d", ["a1", "ad"]],
    ["(a|b)*", "(a|b)xyz", ["a", "b", "axyz"]],
    ["[a-z]?", "[a-z]q", ["a", "aq"]],
    ["\\*", "\\anything", ["*", ""]],
    ["$*", "$x", ["x"]],
    ["a.+", "a.+", ["abc", "a.."]],
  ])("cannot be given regex syntax: %j matches %j literally", (pattern, literal, notMatched) => {
    // Validation refuses these patterns; the matcher must still read them as plain text.
    const matches = compilePattern(p(pattern));
    expect(matches(c(literal))).toBe(true);
    for (const channel of notMatched) expect(matches(c(channel)), channel).toBe(false);
  });

  it("agrees with the spec's semantics for every small pattern and channel", () => {
    const patterns = allStrings("a.:*?", 1, 4);
    const channels = allStrings("a.:", 1, 4);
    for (const pattern of patterns) {
      const matches = compilePattern(p(pattern));
      for (const channel of channels) {
        if (matches(c(channel)) !== referenceMatch(pattern, channel)) {
          expect.fail(`pattern ${pattern} on channel ${channel}: expected ${referenceMatch(pattern, channel)}`);
        }
      }
    }
  });

  it("matchesPattern answers as the compiled matcher does", () => {
    for (const pattern of ["user:*", "room.?", "a*b?c", "alerts"]) {
      for (const channel of ["user:1", "room.1", "axxbyc", "alerts", "nope"]) {
        expect(matchesPattern(p(pattern), c(channel))).toBe(compilePattern(p(pattern))(c(channel)));
      }
    }
  });

  it("matches a many-star pattern against a long channel without stalling the node", () => {
    // A subscriber chooses its pattern, and every publish on the plate runs it: matching must stay
    // fast (linear-ish) whatever the pattern, or one hostile subscription blocks the event loop.
    const matches = compilePattern(p("*a*a*a*a*a*b"));
    const started = performance.now();
    const result = matches(c("a".repeat(64)));
    const elapsedMs = performance.now() - started;
    expect(result).toBe(false);
    expect(elapsedMs).toBeLessThan(100);
  });
});

describe("patternCovers", () => {
  it("lets user:* cover narrower patterns and channels under user:", () => {
    expect(patternCovers(p("user:*"), p("user:42:*"))).toBe(true);
    expect(patternCovers(p("user:*"), p("user:1"))).toBe(true);
    expect(patternCovers(p("user:*"), p("user:?"))).toBe(true);
    expect(patternCovers(p("user:*"), p("user:*:events"))).toBe(true);
  });

  it("does not let user:* cover * or channels outside user:", () => {
    expect(patternCovers(p("user:*"), p("*"))).toBe(false);
    expect(patternCovers(p("user:*"), p("users:1"))).toBe(false);
    expect(patternCovers(p("user:*"), p("admin:*"))).toBe(false);
    expect(patternCovers(p("user:*"), p("user*"))).toBe(false);
  });

  it("does not let ? cover *, nor a? cover a*", () => {
    expect(patternCovers(p("?"), p("*"))).toBe(false);
    expect(patternCovers(p("a?"), p("a*"))).toBe(false);
  });

  it("lets ? cover one literal or one ?, and nothing longer or shorter", () => {
    expect(patternCovers(p("a?"), p("ab"))).toBe(true);
    expect(patternCovers(p("a?"), p("a?"))).toBe(true);
    expect(patternCovers(p("a?"), p("abc"))).toBe(false);
    expect(patternCovers(p("a?"), p("a"))).toBe(false);
  });

  it("does not let a literal cover a wildcard", () => {
    expect(patternCovers(p("ab"), p("a?"))).toBe(false);
    expect(patternCovers(p("ab"), p("a*"))).toBe(false);
  });

  it("lets * cover everything", () => {
    for (const inner of ["*", "?", "user:*", "a", "**?*", "x".repeat(200)]) {
      expect(patternCovers(p("*"), p(inner)), inner).toBe(true);
    }
  });

  it("lets every pattern cover itself", () => {
    for (const pattern of [...allStrings("ab*?", 1, 4), "user:*:events", "room.?", "a.b-c"]) {
      if (!patternCovers(p(pattern), p(pattern))) expect.fail(`${pattern} does not cover itself`);
    }
  });

  it("decides a concrete inner channel exactly as matching does", () => {
    const patterns = allStrings("ab*?", 1, 4);
    const channels = allStrings("ab", 1, 5);
    for (const outer of patterns) {
      for (const channel of channels) {
        if (patternCovers(p(outer), p(channel)) !== referenceMatch(outer, channel)) {
          expect.fail(`patternCovers(${outer}, ${channel}) disagrees with matching`);
        }
      }
    }
  });

  it("is sound: whenever it says covered, every channel of inner is a channel of outer", () => {
    // Channels over {a,b} of length 0..5 (empty included, as `*` may match it); patterns over
    // {a,b,*,?}: every one up to length 4 against every other, plus random longer ones.
    const strings = allStrings("ab", 0, 5);
    const matchSet = new Map<string, boolean[]>();
    const matched = (pattern: string): boolean[] => {
      let set = matchSet.get(pattern);
      if (set === undefined) {
        set = strings.map((s) => referenceMatch(pattern, s));
        matchSet.set(pattern, set);
      }
      return set;
    };
    const check = (outer: string, inner: string): void => {
      if (!patternCovers(p(outer), p(inner))) return;
      const o = matched(outer);
      const n = matched(inner);
      for (let i = 0; i < strings.length; i++) {
        if (n[i] === true && o[i] !== true) {
          expect.fail(`patternCovers(${outer}, ${inner}) but ${JSON.stringify(strings[i])} escapes`);
        }
      }
    };

    const small = allStrings("ab*?", 1, 4);
    let covered = 0;
    for (const outer of small) {
      for (const inner of small) {
        check(outer, inner);
        if (patternCovers(p(outer), p(inner))) covered++;
      }
    }
    // The check above is meaningful only if many pairs are in fact covered.
    expect(covered).toBeGreaterThan(1000);

    let state = 42;
    const random = (n: number): number => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state % n;
    };
    const randomPattern = (): string => {
      let text = "";
      const length = 1 + random(7);
      for (let i = 0; i < length; i++) text += "ab*?"[random(4)] ?? "";
      return text;
    };
    for (let i = 0; i < 20000; i++) check(randomPattern(), randomPattern());
  });
});
