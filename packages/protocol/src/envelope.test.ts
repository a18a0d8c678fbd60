import { describe, expect, it } from "vitest";
import { bodyFromForeignPayload, encodeEnvelope, encodeSseMessage, type Message } from "./envelope.js";
import type { ChannelName, MessageId, PlateId } from "./names.js";

function message(body: string, overrides: { id?: string; channel?: string } = {}): Message {
  return {
    plateId: "p1" as PlateId,
    channel: (overrides.channel ?? "user:123:events") as ChannelName,
    id: (overrides.id ?? "01J8ZK3Q4V7N0000abc") as MessageId,
    timestamp: "2026-03-15T12:00:00.000Z",
    body,
  };
}

interface SseEvent {
  event: string;
  id: string;
  data: string;
}

/** Reads an event stream the way a browser's EventSource does (WHATWG HTML, "event stream"). */
function parseSse(stream: string): SseEvent[] {
  const events: SseEvent[] = [];
  let data: string[] = [];
  let event = "";
  let id = "";
  for (const line of stream.split(/\r\n|\r|\n/)) {
    if (line === "") {
      if (data.length > 0) events.push({ event: event || "message", id, data: data.join("\n") });
      data = [];
      event = "";
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id") id = value;
  }
  return events;
}

describe("encodeEnvelope", () => {
  it("produces exactly the spec's envelope", () => {
    const text = encodeEnvelope(message('{"text":"hi"}'));
    expect(JSON.parse(text)).toStrictEqual({
      type: "message",
      id: "01J8ZK3Q4V7N0000abc",
      channel: "user:123:events",
      message: { text: "hi" },
      timestamp: "2026-03-15T12:00:00.000Z",
    });
  });

  it("lists the envelope's fields in the spec's order", () => {
    const text = encodeEnvelope(message("1"));
    expect(Object.keys(JSON.parse(text) as object)).toEqual(["type", "id", "channel", "message", "timestamp"]);
  });

  it("names the event and the client that published it, before the message, as valid JSON whatever the user id", () => {
    const from = { clientId: "n1.x", user: 'ann "the admin"\n\u2028 日本' };
    const text = encodeEnvelope({ ...message('{"t":1}'), event: "typing", from });
    expect(text).not.toMatch(/[\r\n]/);
    const envelope = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(envelope)).toEqual(["type", "id", "channel", "event", "from", "message", "timestamp"]);
    expect(envelope).toMatchObject({ event: "typing", from, message: { t: 1 } });
    expect(Object.keys(JSON.parse(encodeEnvelope({ ...message("1"), from: { clientId: "c" } })) as object)).toEqual(["type", "id", "channel", "from", "message", "timestamp"]);
  });

  it.each([
    ["a nested object", { a: { b: [1, 2, { c: null }] }, d: true, e: -1.5e-7 }],
    ["a string", "hello"],
    ["a string with quotes and escapes", 'she said "hi"\n\t\\ done'],
    ["unicode", { emoji: "😀", accents: "héllo", cjk: "日本語", rtl: "שלום", sep: "a\u2028b" }],
    ["an array", [1, "two", [3]]],
    ["a number", 42],
    ["zero", 0],
    ["false", false],
    ["null", null],
    ["an empty object", {}],
    ["an empty string", ""],
  ])("delivers %s as the message value unchanged", (_label, value) => {
    const text = encodeEnvelope(message(JSON.stringify(value)));
    const envelope = JSON.parse(text) as { message: unknown };
    expect(envelope.message).toStrictEqual(value);
  });

  it("keeps the concrete channel, including the channel alphabet's punctuation", () => {
    const text = encodeEnvelope(message("1", { channel: "a.b:c@d=e~f-g_h" }));
    expect((JSON.parse(text) as { channel: string }).channel).toBe("a.b:c@d=e~f-g_h");
  });

  it("stays on one line for a body that is one line", () => {
    const text = encodeEnvelope(message(JSON.stringify({ lines: "one\ntwo\r\nthree" })));
    expect(text).not.toMatch(/[\r\n]/);
  });
});

describe("encodeSseMessage", () => {
  it("frames one unnamed event with id: then data: and a blank line", () => {
    const envelope = encodeEnvelope(message('{"x":1}'));
    const frame = encodeSseMessage("m1" as MessageId, envelope);
    expect(frame).toBe(`id: m1\ndata: ${envelope}\n\n`);
  });

  it("is read by an EventSource as one message event carrying the envelope", () => {
    const envelope = encodeEnvelope(message(JSON.stringify({ text: "multi\nline", n: [1, 2] }), { id: "m7" }));
    const events = parseSse(encodeSseMessage("m7" as MessageId, envelope));
    expect(events).toHaveLength(1);
    expect(events[0]?.event).toBe("message");
    expect(events[0]?.id).toBe("m7");
    expect(JSON.parse(events[0]?.data ?? "null")).toStrictEqual(JSON.parse(envelope));
  });

  it("keeps back-to-back frames apart", () => {
    const first = encodeSseMessage("m1" as MessageId, encodeEnvelope(message('"a"', { id: "m1" })));
    const second = encodeSseMessage("m2" as MessageId, encodeEnvelope(message('"b"', { id: "m2" })));
    const events = parseSse(first + ": ping\n\n" + second);
    expect(events.map((e) => e.id)).toEqual(["m1", "m2"]);
    expect(events.map((e) => (JSON.parse(e.data) as { message: string }).message)).toEqual(["a", "b"]);
  });
});

describe("bodyFromForeignPayload", () => {
  it.each(['{"a":1}', "[1,2,3]", "42", '"already a string"', "null", "true", '{"nested":{"deep":[{}]}}'])(
    "passes JSON %s through as it is",
    (payload) => {
      expect(bodyFromForeignPayload(payload)).toBe(payload);
    },
  );

  it("keeps the exact text of JSON numbers a round trip would change", () => {
    // Re-serializing would turn 1.0 into 1 and lose digits of big integers.
    for (const payload of ["1.0", "12345678901234567890", '{"n":1e400}']) {
      expect(bodyFromForeignPayload(payload)).toBe(payload);
    }
  });

  it("drops whitespace around JSON", () => {
    expect(bodyFromForeignPayload('  {"a":1}\n')).toBe('{"a":1}');
  });

  it.each(["hello", "not json {", "{'single':'quotes'}", "", "   ", "undefined", "NaN", "héllo 😀", 'say "hi"'])(
    "delivers non-JSON %j as that string",
    (payload) => {
      const body = bodyFromForeignPayload(payload);
      expect(JSON.parse(body)).toBe(payload);
    },
  );

  it("gives a body that embeds into a valid envelope whatever the payload", () => {
    for (const payload of ["plain", '{"a":1}', "", "\u0000\u001f", "line\nbreak"]) {
      const envelope = JSON.parse(encodeEnvelope(message(bodyFromForeignPayload(payload)))) as {
        message: unknown;
      };
      const expected: unknown = (() => {
        try {
          return JSON.parse(payload);
        } catch {
          return payload;
        }
      })();
      expect(envelope.message).toStrictEqual(expected);
    }
  });

  it("delivers a pretty-printed JSON payload to SSE subscribers as one intact envelope", () => {
    // A backend publishing straight into the broker may well send JSON.stringify(value, null, 2).
    const value = { user: 42, tags: ["a", "b"], nested: { ok: true } };
    const body = bodyFromForeignPayload(JSON.stringify(value, null, 2));
    const envelope = encodeEnvelope(message(body, { id: "m9" }));
    const events = parseSse(encodeSseMessage("m9" as MessageId, envelope));
    expect(events).toHaveLength(1);
    const data = events[0]?.data ?? "";
    expect(() => JSON.parse(data) as unknown).not.toThrow();
    expect((JSON.parse(data) as { message: unknown }).message).toStrictEqual(value);
  });
});
