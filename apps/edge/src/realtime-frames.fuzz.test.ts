import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MAX_REF_CHARS, PlateError, isChannelName, isChannelPattern, parseRealtimeFrame } from "@plate/protocol";
import { readChange } from "./core/realtime.js";

/**
 * Route 9's frame reader against hostile input: whatever text arrives, it answers a frame of the
 * table or an `unreadable` one (never throws), and a frame it passes on carries only valid names.
 */

const CASES = Number(process.env.FUZZ_CASES ?? 1600);
const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

/** JSON objects that look like frames: known and unknown types, names of every kind, refs of every kind. */
const frameLike = fc.record(
  {
    type: fc.oneof(fc.constantFrom("subscribe", "unsubscribe", "ping", "auth", "publish", "presence.track", "presence.untrack", "SUBSCRIBE", ""), fc.string(), fc.integer()),
    ref: fc.oneof(fc.string({ maxLength: 200 }), fc.integer(), fc.double(), fc.constant(null), fc.array(fc.integer())),
    channel: fc.oneof(fc.string({ maxLength: 220 }), fc.constantFrom("a", "room:1", "a*", "x".repeat(201)), fc.integer(), fc.constant(null)),
    pattern: fc.oneof(fc.string({ maxLength: 220 }), fc.constantFrom("user:*", "?", "[a]"), fc.constant(null)),
    since: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
    key: fc.oneof(fc.string(), fc.integer()),
    message: fc.jsonValue(),
    event: fc.oneof(fc.string({ maxLength: 220 }), fc.constantFrom("typing", "a b", ""), fc.integer(), fc.constant(null)),
    self: fc.oneof(fc.boolean(), fc.string(), fc.constant(null)),
    presence: fc.oneof(fc.boolean(), fc.string(), fc.constant(null)),
    state: fc.jsonValue(),
    filter: fc.oneof(fc.jsonValue(), fc.constant({ equals: { a: 1 } })),
    volatile: fc.jsonValue(),
  },
  { requiredKeys: [] },
);

describe("parseRealtimeFrame with hostile input", () => {
  it("answers a frame or `unreadable` for any text, never throwing, and passes on only valid names and refs", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), frameLike.map((f) => JSON.stringify(f))), (text) => {
        const frame = parseRealtimeFrame(text);
        if (frame.ref !== undefined) {
          expect(typeof frame.ref === "string" ? frame.ref.length <= MAX_REF_CHARS : Number.isSafeInteger(frame.ref)).toBe(true);
        }
        if (frame.type === "subscribe" || frame.type === "unsubscribe") {
          if ("channel" in frame) expect(isChannelName(frame.channel)).toBe(true);
          else expect(isChannelPattern(frame.pattern)).toBe(true);
        }
        if (frame.type === "publish") {
          expect(isChannelName(frame.channel)).toBe(true);
          if (frame.event !== undefined) expect(isChannelName(frame.event)).toBe(true);
          expect(JSON.stringify(JSON.parse(frame.body))).toBe(frame.body);
        }
        if (frame.type === "subscribe" && "self" in frame) expect(frame.self).toBe(false);
        if (frame.type === "subscribe" && "presence" in frame) expect([frame.presence, "channel" in frame]).toEqual([true, true]);
        if (frame.type === "presence.track" || frame.type === "presence.untrack") expect(isChannelName(frame.channel)).toBe(true);
        if (frame.type === "presence.track") expect(JSON.stringify(JSON.parse(frame.state))).toBe(frame.state);
        if (frame.type === "subscribe" && frame.filter !== undefined) expect(typeof frame.filter === "object" && frame.filter !== null && !Array.isArray(frame.filter)).toBe(true);
        if (frame.type === "publish" && frame.volatile !== undefined) expect(JSON.stringify(JSON.parse(frame.volatile))).toBe(frame.volatile);
        if (frame.type === "unreadable") expect(["bad_request", "invalid_channel", "invalid_parameter", "invalid_filter"]).toContain(frame.code);
      }),
      { numRuns: CASES, ...(seed === undefined ? {} : { seed }) },
    );
  });

  it("reads route 9's POST body into a change of valid names, or refuses it with the spec's codes", () => {
    const entry = fc.oneof(frameLike, fc.jsonValue());
    const body = fc.oneof(
      fc.record({ subscribe: fc.oneof(fc.array(entry), fc.jsonValue()), unsubscribe: fc.oneof(fc.array(entry), fc.jsonValue()) }, { requiredKeys: [] }),
      fc.jsonValue(),
    );
    fc.assert(
      fc.property(body, (value) => {
        try {
          const change = readChange(value, 200);
          for (const name of [...(change?.subscribe ?? []), ...(change?.unsubscribe ?? [])]) {
            expect("channel" in name ? isChannelName(name.channel) : isChannelPattern(name.pattern)).toBe(true);
          }
          for (const asked of change?.subscribe ?? []) if (asked.filter !== undefined) expect(Array.isArray(asked.filter)).toBe(false);
        } catch (err) {
          expect(err).toBeInstanceOf(PlateError);
          expect(["bad_request", "invalid_channel", "invalid_filter"]).toContain((err as PlateError).code);
        }
      }),
      { numRuns: CASES, ...(seed === undefined ? {} : { seed }) },
    );
  });
});
