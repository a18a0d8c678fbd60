import { describe, expect, it } from "vitest";
import { NO_USER, PayloadScanner, encodePayload, userFilter } from "./payload.js";

function scan(chunks: string[]): [number, number, number, number][] {
  const found: [number, number, number, number][] = [];
  const scanner = new PayloadScanner((seq, publisher, sentMs, user) => found.push([seq, publisher, sentMs, user]));
  for (const chunk of chunks) scanner.feed(Buffer.from(chunk, "latin1"));
  return found;
}

describe("PayloadScanner", () => {
  const stream =
    'HTTP/1.1 200 OK\r\n\r\n7b\r\nid: x\ndata: {"type":"message","message":' +
    encodePayload(12, 3, 456.789) +
    ',"timestamp":"t"}\n\n\r\n\x81\x1b' +
    encodePayload(0, 0, 1.5) +
    encodePayload(7, 1, 2);

  it("finds every payload inside SSE events, chunked encoding and WebSocket frames", () => {
    expect(scan([stream])).toEqual([
      [12, 3, 456.789, NO_USER],
      [0, 0, 1.5, NO_USER],
      [7, 1, 2, NO_USER],
    ]);
  });

  it("finds the same payloads whatever the read boundaries, even inside a payload or its start", () => {
    for (let cut = 1; cut < stream.length; cut++) {
      expect(scan([stream.slice(0, cut), stream.slice(cut)])).toEqual(scan([stream]));
    }
  });

  it("keeps what it holds back when the reader overwrites its buffer with the next read", () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const found: [number, number, number][] = [];
      const scanner = new PayloadScanner((seq, publisher, sentMs) => found.push([seq, publisher, sentMs]));
      const buffer = new Uint8Array(stream.length);
      const first = Buffer.from(stream.slice(0, cut), "latin1");
      buffer.set(first);
      scanner.feed(buffer.subarray(0, first.length));
      buffer.fill(0x7b);
      const second = Buffer.from(stream.slice(cut), "latin1");
      buffer.set(second);
      scanner.feed(buffer.subarray(0, second.length));
      expect(found).toEqual(scan([stream]).map(([seq, publisher, sentMs]) => [seq, publisher, sentMs]));
    }
  });
});

describe("a payload for one filtered subscriber", () => {
  const stream =
    'data: {"type":"message","message":' +
    encodePayload(4, 2, 10.25, 917) +
    ',"timestamp":"t"}\n\n' +
    encodePayload(5, 2, 11, 0);

  it("carries the user its subscriber's filter names", () => {
    const payload = JSON.parse(encodePayload(4, 2, 10.25, 917)) as Record<string, unknown>;
    const filter = JSON.parse(userFilter(917)) as { equals: Record<string, unknown> };
    expect(payload).toEqual({ s: 4, p: 2, t: 10.25, ...filter.equals });
    expect(JSON.parse(userFilter(918))).not.toEqual(filter);
  });

  it("is scanned with its user, whatever the read boundaries", () => {
    expect(scan([stream])).toEqual([
      [4, 2, 10.25, 917],
      [5, 2, 11, 0],
    ]);
    for (let cut = 1; cut < stream.length; cut++) {
      expect(scan([stream.slice(0, cut), stream.slice(cut)])).toEqual(scan([stream]));
    }
  });
});
