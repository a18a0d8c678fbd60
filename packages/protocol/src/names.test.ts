import { describe, expect, it } from "vitest";
import {
  isChannelName,
  isChannelPattern,
  isClientTokenShape,
  isPlateId,
  topicKey,
  type ChannelName,
  type ChannelPattern,
  type PlateId,
  type Topic,
} from "./names.js";

/** Characters no name may hold, whatever its kind (the spec's grammars all leave them out). */
const NEVER_ALLOWED = ["[", "]", "\\", " ", "/", "\n", "\t", "#", "%", '"', "'", "&", "+", ",", "é", "😀"];

describe("plate ids", () => {
  it.each(["a", "Z", "0", "demo", "my-plate_01", "ABC-xyz_789", "-", "_"])("accepts %j", (id) => {
    expect(isPlateId(id)).toBe(true);
  });

  it("accepts 64 characters and refuses 65", () => {
    expect(isPlateId("p".repeat(64))).toBe(true);
    expect(isPlateId("p".repeat(65))).toBe(false);
  });

  it("refuses the empty string", () => {
    expect(isPlateId("")).toBe(false);
  });

  it.each([...NEVER_ALLOWED, ".", ":", "@", "=", "~", "*", "?"])("refuses a plate id holding %j", (char) => {
    expect(isPlateId(`ab${char}cd`)).toBe(false);
    expect(isPlateId(char)).toBe(false);
  });

  it("refuses a valid id followed by a line break", () => {
    expect(isPlateId("demo\n")).toBe(false);
    expect(isPlateId("\ndemo")).toBe(false);
  });
});

describe("channel names", () => {
  it.each(["user:123:events", "room.lobby", "alerts", "a", "x@y=z~w", "A-Z_a-z.0-9:@=~"])("accepts %j", (channel) => {
    expect(isChannelName(channel)).toBe(true);
  });

  it("accepts every character of the spec's channel alphabet", () => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@=~-";
    for (const char of alphabet) expect(isChannelName(char), char).toBe(true);
    expect(isChannelName(alphabet)).toBe(true);
  });

  it("accepts 200 characters and refuses 201", () => {
    expect(isChannelName("c".repeat(200))).toBe(true);
    expect(isChannelName("c".repeat(201))).toBe(false);
  });

  it("refuses the empty string", () => {
    expect(isChannelName("")).toBe(false);
  });

  it.each([...NEVER_ALLOWED, "*", "?"])("refuses a channel holding %j", (char) => {
    expect(isChannelName(`user:${char}:events`)).toBe(false);
    expect(isChannelName(char)).toBe(false);
  });

  it("refuses a valid channel followed by a line break", () => {
    expect(isChannelName("alerts\n")).toBe(false);
  });
});

describe("channel patterns", () => {
  it.each(["user:*", "user:*:events", "room.?", "*", "?", "a*b?c", "**", "alerts"])("accepts %j", (pattern) => {
    expect(isChannelPattern(pattern)).toBe(true);
  });

  it("accepts every channel name as a pattern", () => {
    for (const channel of ["user:123:events", "room.lobby", "x@y=z~w-_", "c".repeat(200)]) {
      expect(isChannelName(channel)).toBe(true);
      expect(isChannelPattern(channel)).toBe(true);
    }
  });

  it("accepts 200 characters, wildcards included, and refuses 201", () => {
    expect(isChannelPattern("*?".repeat(100))).toBe(true);
    expect(isChannelPattern("*".repeat(201))).toBe(false);
    expect(isChannelPattern("c".repeat(201))).toBe(false);
  });

  it("refuses the empty string", () => {
    expect(isChannelPattern("")).toBe(false);
  });

  it.each([...NEVER_ALLOWED, "{", "}", "(", ")", "!", "^", "$", "|"])(
    "refuses a pattern holding %j (no other glob or regex syntax)",
    (char) => {
      expect(isChannelPattern(`user:*${char}`)).toBe(false);
      expect(isChannelPattern(char)).toBe(false);
    },
  );

  it("refuses character classes and escapes", () => {
    for (const pattern of ["[abc]", "[a-z]*", "user:\\*", "a{1,2}", "a/b/*"]) {
      expect(isChannelPattern(pattern), pattern).toBe(false);
    }
  });
});

describe("client token shape", () => {
  it("accepts a 32-character url-safe token", () => {
    expect(isClientTokenShape("AbCdEfGhIjKlMnOpQrStUvWxYz012-_9")).toBe(true);
  });

  it("accepts 16 to 128 characters only", () => {
    expect(isClientTokenShape("t".repeat(15))).toBe(false);
    expect(isClientTokenShape("t".repeat(16))).toBe(true);
    expect(isClientTokenShape("t".repeat(128))).toBe(true);
    expect(isClientTokenShape("t".repeat(129))).toBe(false);
  });

  it("refuses characters outside the url-safe alphabet", () => {
    for (const char of [".", "/", "+", "=", "%", " ", "~"]) {
      expect(isClientTokenShape(`${"t".repeat(20)}${char}`), char).toBe(false);
    }
  });
});

describe("topicKey", () => {
  const plates = ["a", "b", "a-c", "a_p", "c", "p", "ab", "A", "-", "_"];
  const names = ["a", "c", "p", "x", "c:a", "a:c", "p.c", "b-c", "a_p", "-", "~", "@=", "room.lobby"];
  const patterns = [...names, "*", "?", "a*", "*:c", "p?c"];

  function allTopics(): Topic[] {
    const topics: Topic[] = [];
    for (const plate of plates) {
      const plateId = plate as PlateId;
      for (const name of names) {
        topics.push({ plateId, pattern: false, channel: name as ChannelName });
      }
      for (const name of patterns) {
        topics.push({ plateId, pattern: true, channel: name as ChannelPattern });
      }
    }
    return topics;
  }

  function identity(topic: Topic): string {
    return JSON.stringify([topic.plateId, topic.pattern, topic.channel]);
  }

  it("never gives two different topics the same key, across plates and kinds", () => {
    const seen = new Map<string, string>();
    for (const topic of allTopics()) {
      const key = topicKey(topic);
      const previous = seen.get(key);
      if (previous !== undefined) expect(previous).toBe(identity(topic));
      seen.set(key, identity(topic));
    }
    expect(seen.size).toBe(allTopics().length);
  });

  it("never collides across plates for random valid names", () => {
    const plateAlphabet = "ab-_";
    const channelAlphabet = "ab-_.:@=~";
    let state = 12345;
    const random = (n: number): number => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state % n;
    };
    const pick = (alphabet: string, maxLength: number): string => {
      let text = "";
      const length = 1 + random(maxLength);
      for (let i = 0; i < length; i++) text += alphabet[random(alphabet.length)] ?? "";
      return text;
    };
    const seen = new Map<string, string>();
    for (let i = 0; i < 5000; i++) {
      const plateId = pick(plateAlphabet, 4);
      const channel = pick(channelAlphabet, 5);
      expect(isPlateId(plateId)).toBe(true);
      expect(isChannelName(channel)).toBe(true);
      const topic: Topic = { plateId: plateId as PlateId, pattern: false, channel: channel as ChannelName };
      const key = topicKey(topic);
      const previous = seen.get(key);
      if (previous !== undefined) expect(previous).toBe(identity(topic));
      seen.set(key, identity(topic));
    }
  });

  it("keys a channel and a pattern of the same text apart", () => {
    const plateId = "p1" as PlateId;
    expect(topicKey({ plateId, pattern: false, channel: "alerts" as ChannelName })).not.toBe(
      topicKey({ plateId, pattern: true, channel: "alerts" as ChannelPattern }),
    );
  });

  it("gives the same topic the same key every time", () => {
    const make = (): Topic => ({ plateId: "p1" as PlateId, pattern: true, channel: "user:*" as ChannelPattern });
    expect(topicKey(make())).toBe(topicKey(make()));
  });
});
