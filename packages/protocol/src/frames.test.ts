import { describe, expect, it } from "vitest";
import { encodeServerFrame, parseClientFrame } from "./frames.js";

describe("parseClientFrame", () => {
  it("reads the spec's auth frame, which has no type", () => {
    expect(parseClientFrame('{"auth":"k"}')).toEqual({ type: "auth", key: "k" });
  });

  it("reads an auth frame that also says type auth", () => {
    expect(parseClientFrame('{"type":"auth","auth":"sk_live_123"}')).toEqual({ type: "auth", key: "sk_live_123" });
  });

  it("keeps the key exactly as sent, spaces and unicode included", () => {
    expect(parseClientFrame('{"auth":"  Bearer k é😀 "}')).toEqual({ type: "auth", key: "  Bearer k é😀 " });
  });

  it("reads a ping", () => {
    expect(parseClientFrame('{"type":"ping"}')).toEqual({ type: "ping" });
  });

  it("ignores whitespace and unknown extra fields", () => {
    expect(parseClientFrame(' { "type" : "ping", "at": 123 } ')).toEqual({ type: "ping" });
    expect(parseClientFrame('{"auth":"k","v":2}')).toEqual({ type: "auth", key: "k" });
  });

  it.each([
    ["text that is not JSON", "hello"],
    ["truncated JSON", '{"auth":"k"'],
    ["an empty frame", ""],
    ["an array", '["auth","k"]'],
    ["an array holding a frame", '[{"type":"ping"}]'],
    ["null", "null"],
    ["a number", "42"],
    ["a string", '"ping"'],
    ["true", "true"],
    ["an empty object", "{}"],
    ["an unknown type", '{"type":"subscribe","channel":"x"}'],
    ["a type in the wrong case", '{"type":"PING"}'],
    ["a non-string auth", '{"auth":123}'],
    ["a null auth", '{"auth":null}'],
    ["an object auth", '{"auth":{"key":"k"}}'],
    ["an auth with a foreign type", '{"type":"publish","auth":"k"}'],
    ["type auth without a key", '{"type":"auth"}'],
  ])("refuses %s as a bad request", (_label, text) => {
    expect(parseClientFrame(text)).toBeUndefined();
  });

  it("is not fooled by prototype keys", () => {
    expect(parseClientFrame('{"__proto__":{"type":"ping","auth":"k"}}')).toBeUndefined();
  });
});

describe("encodeServerFrame", () => {
  it("writes the ready frame as the spec shows it", () => {
    const text = encodeServerFrame({ type: "ready", clientId: "c1", channel: "user:*", pattern: true });
    expect(JSON.parse(text)).toStrictEqual({ type: "ready", clientId: "c1", channel: "user:*", pattern: true });
  });

  it("writes a pong", () => {
    expect(JSON.parse(encodeServerFrame({ type: "pong" }))).toStrictEqual({ type: "pong" });
  });

  it("writes an error frame as the error body with type error added", () => {
    const text = encodeServerFrame({
      type: "error",
      error: { code: "exhausted_client_socket", message: 'Used up; ask for a new "link".' },
    });
    expect(JSON.parse(text)).toStrictEqual({
      type: "error",
      error: { code: "exhausted_client_socket", message: 'Used up; ask for a new "link".' },
    });
  });
});
